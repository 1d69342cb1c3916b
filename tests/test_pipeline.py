"""The stage declarations (lib.pipeline) against the code and dvc.yaml: layers, import circles, deps, dvc.yaml
written from them."""

from pathlib import Path

import networkx as nx
import pytest
import yaml

from lib import pipeline
from lib.pipeline import LAYERS, STAGES, closure, module_file, stage_closure

ROOT = Path(__file__).resolve().parent.parent


def all_modules() -> list[str]:
    out = []
    for path in sorted((ROOT / "lib").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def layer_of(module: str) -> int:
    """Index of the layer whose longest prefix names ``module``."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module} is in no layer of lib.pipeline.LAYERS: add it"
    return index


def direct_imports(module: str) -> set[str]:
    """The modules ``module`` names in its imports (not their parent packages)."""
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return {m for m in pipeline._imports(path.read_text(), package) if module_file(m) is not None} - {module}


def test_every_module_is_in_a_layer_and_imports_no_layer_above_it():
    upward = []
    for module in all_modules():
        mine = layer_of(module)
        for imported in direct_imports(module):
            if layer_of(imported) > mine:
                upward.append(f"{module} ({LAYERS[mine][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = nx.DiGraph()
    for module in all_modules():
        graph.add_node(module)
        for imported in direct_imports(module):
            parent = module.rpartition(".")[0]
            if imported != parent:  # a package's __init__ importing its own submodules is no circle
                graph.add_edge(module, imported)
    for module in all_modules():  # a package __init__ re-exporting its submodules: drop the package -> child edges
        for child in list(graph.successors(module)):
            if child.startswith(module + ".") and module_file(module).name == "__init__.py":
                graph.remove_edge(module, child)
    cycles = [c for c in nx.simple_cycles(graph)]
    assert not cycles, f"import circles: {cycles}"


def test_closure_follows_function_level_imports(tmp_path):
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "a.py").write_text("def f():\n    from lib.sub import b\n")
    (lib / "sub" / "__init__.py").write_text("")
    (lib / "sub" / "b.py").write_text("from . import c\n")
    (lib / "sub" / "c.py").write_text("import os\n")
    (lib / "unused.py").write_text("")
    assert closure({"lib.a"}, tmp_path) == {"lib", "lib.a", "lib.sub", "lib.sub.b", "lib.sub.c"}


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def library_deps(stage: dict) -> set[str]:
    """The lib/ files a dvc.yaml stage lists (folders expanded to their .py files)."""
    out = set()
    for dep in stage.get("deps", []):
        path = ROOT / dep
        if dep.startswith("lib"):
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            out |= {str(f.relative_to(ROOT)) for f in files}
    return out


@pytest.mark.parametrize("name", list(STAGES))
def test_dvc_deps_are_exactly_the_library_files_the_stage_runs(name):
    stage = dvc_stages()[name]
    expected, listed = set(stage_closure(STAGES[name])), library_deps(stage)
    assert listed == expected, (
        f"dvc.yaml stage {name!r}: missing {sorted(expected - listed)}, not run {sorted(listed - expected)}; "
        f"`python -m lib.pipeline deps {name}` prints the list")


@pytest.mark.parametrize("name", list(STAGES))
def test_dvc_commands_run_the_declared_notebook_and_sections(name):
    declared, stage = STAGES[name], dvc_stages()[name]
    words = stage["cmd"].split()
    assert words[:3] == ["python", "-m", declared.module]
    if declared.notebook:
        assert words[3] == declared.notebook
        # what runs is the notebook's jupytext twin: the stage depends on it, not on the .ipynb Lab rewrites
        assert str(pipeline.twin(declared.notebook)) in stage["deps"] and declared.notebook not in stage["deps"]
    sections = words[words.index("--params") + 1:] if "--params" in words else []
    sections = sections[:next((i for i, w in enumerate(sections) if w.startswith("--")), len(sections))]
    placeholders = {"${item.arch}": "{arch}", "${item.plan}": "{plan}", "${item.variant}": "{variant}",
                    "${item.seed}": "{seed}"}
    for old, new in placeholders.items():
        sections = [s.replace(old, new) for s in sections]
    assert tuple(sections) == declared.params
    tracked = [p.replace("${item.arch}", "{arch}").replace("${item.plan}", "{plan}").replace("${item.variant}", "{variant}")
               for p in stage.get("params", [])]
    if declared.dvc_params is None:
        assert tracked == [*declared.params, *declared.tracks]
    else:  # narrower: keys within the sections it reads
        assert tracked == list(declared.dvc_params)
        assert all(key.split(".")[0] in {s.split(".")[0] for s in declared.params} for key in tracked)
    assert tuple(stage.get("matrix", {})) == declared.matrix
    lists = {**pipeline.MATRIX_LISTS, "variant": f"variants.{declared.variant_of}"}
    assert stage.get("matrix", {}) == {key: f"${{{lists[key]}}}" for key in declared.matrix}


@pytest.mark.parametrize("name", [n for n, s in STAGES.items() if s.matrix])
def test_dvc_outputs_and_summaries_follow_the_seed_layout(name):
    """Every matrix stage writes into lib.pipeline.output_dir of its item and its flat summary to summary_path;
    an analysis reads the prune stage's output of its own (arch, plan, seed)."""
    stage, keys = dvc_stages()[name], STAGES[name].matrix
    item = {key: f"${{item.{key}}}" for key in keys}
    folder = str(pipeline.output_dir(name, item["arch"], item.get("plan"), 0, item.get("variant")))
    folder = folder.replace("seed0", "seed${item.seed}")
    words = stage["cmd"].split()
    assert words[4] == folder
    assert all(str(next(iter(o)) if isinstance(o, dict) else o).startswith(folder + "/") for o in stage["outs"])
    summary = str(pipeline.summary_path(name, item["arch"], item.get("plan"), 0, item.get("variant")))
    assert words[words.index("--summary") + 1] == summary.replace("seed0", "seed${item.seed}")
    if "seed" not in keys:  # a population stage reads every seed's prune run under the (arch, plan) folder
        source = str(pipeline.output_dir("prune", item["arch"], item["plan"], 0).parent)
        assert f"source={source}" in words and "seeds" in STAGES[name].params
    elif name not in ("train", "prune"):
        source = str(pipeline.output_dir("prune", item["arch"], item["plan"], 0)).replace("seed0", "seed${item.seed}")
        assert f"source={source}" in words
    else:  # the seed reaches training and pruning
        assert "seed=${item.seed}" in words


def test_dvc_yaml_is_what_the_declarations_give():
    """dvc.yaml is written from lib.pipeline (commands, matrix, params, deps, outs, metrics, plots), never by hand."""
    diff = pipeline.check_dvc_yaml(ROOT / "dvc.yaml")
    assert not diff, ("dvc.yaml is not what the stage declarations in lib/pipeline.py give: run "
                      "`python -m lib.pipeline dvc --write` and commit dvc.yaml\n" + diff[:4000])


def test_what_a_stage_provides_it_writes():
    for stage in STAGES.values():
        assert set(stage.provides) <= set(stage.outs or ()), stage.name


def test_a_stage_declared_without_its_inputs_is_refused():
    """The generator names the declaration to fix instead of writing a stage without its inputs."""
    from dataclasses import replace

    reader = replace(STAGES["interpret"], name="reader", upstream=("data", "train"), sets=())
    bare_train = replace(STAGES["train"], provides=())
    original = dict(STAGES)
    try:
        STAGES.update(reader=reader, train=bare_train)
        with pytest.raises(ValueError, match="'reader' reads 'train' of its own matrix item.*declares no `provides`"):
            pipeline.dvc_stage(reader)
        with pytest.raises(ValueError, match=r"'reader' names \{prune\} in 'source=\{prune\}'.*upstream: data, train"):
            pipeline.dvc_stage(replace(reader, sets=("source={prune}",)))
    finally:
        STAGES.clear()
        STAGES.update(original)


def test_the_generator_prints_diffs_and_writes(tmp_path, capsys):
    text = pipeline.dvc_yaml()
    assert pipeline.main(["dvc"]) == 0 and capsys.readouterr().out == text
    stale = tmp_path / "dvc.yaml"
    stale.write_text(text.replace("      - lib/storage.py\n", "", 1))
    assert "+      - lib/storage.py" in pipeline.check_dvc_yaml(stale)
    pipeline.write_dvc_yaml(stale)
    assert stale.read_text() == text and pipeline.check_dvc_yaml(stale) == ""
    assert pipeline.main(["dvc", "--nonsense"]) == 2 and "usage" in capsys.readouterr().out


def test_training_never_depends_on_the_report_or_the_analyses():
    for name in ("data", "train", "prune"):
        runs = stage_closure(STAGES[name])
        assert not [f for f in runs if f.startswith(("lib/report", "lib/interpret", "lib/discover", "lib/align",
                                                     "lib/mis", "lib/checkpoints"))], name


def test_every_stage_check_exists_and_refuses_a_bad_value():
    from lib.stage import notebook_parameters

    for stage in STAGES.values():
        if stage.check is None:
            continue
        checker = stage.checker()
        assert callable(checker), stage.name
        if stage.notebook:
            defaults = notebook_parameters(ROOT / stage.notebook)
            assert isinstance(checker(defaults), list), stage.name  # the smoke defaults pass


def test_the_report_shows_every_metric_a_stage_declares(tmp_path):
    """A metrics tree with one column per declared metric: each reaches a panel of the report's figure."""
    from lib.report import load_dimensions, panels
    from lib.results import save_stage_metrics

    rows = [{"step": s, "sparsity": s * 0.2, "test_acc": 0.5} for s in range(3)]
    lineage = {"seed": 0, "control": None, "control_of": None}
    save_stage_metrics(tmp_path / "prune" / "a" / "m" / "seed0", rows, plot="accuracy", arch="a", plan="m", **lineage)
    declared = {}
    for name in pipeline.ANALYSES:
        columns = [m.name.replace("*", "x") for m in STAGES[name].metrics]
        declared[name] = {m.name for m in STAGES[name].metrics}
        save_stage_metrics(tmp_path / name / "a" / "m" / "seed0", [{**r, **dict.fromkeys(columns, 0.5)} for r in rows],
                           arch="a", plan="m", **lineage)
    frame, columns = load_dimensions(tmp_path)
    shown = {}
    for stage, metric, _ in panels(columns):
        shown.setdefault(stage, set()).add(metric)
    for name in pipeline.ANALYSES:
        assert shown.get(name) == declared[name], name


def test_item_columns_expand_like_their_metric():
    metric = pipeline.Metric("corloc_*", item="hit_*")
    assert metric.item_column("corloc_lost") == "hit_lost"
    assert pipeline.Metric("ood_acc", item="ood_score").item_column("ood_acc") == "ood_score"
    assert pipeline.Metric("shape_bias").item_column("shape_bias") is None


def test_variant_stages_mirror_their_stage_and_the_default_runs_none():
    variants = {name: s for name, s in STAGES.items() if s.variants}
    assert sorted(variants) == ["align", "discover", "interpret"]
    for name, declared in variants.items():
        variant = STAGES[f"{name}_variant"]
        assert variant.variant_of == name and not variant.variants
        assert (variant.notebook, variant.check, variant.metrics, variant.items) == (
            declared.notebook, declared.check, declared.metrics, declared.items)
        assert variant.params == (*declared.params, f"variants.{name}.{{variant}}")  # the variant's values win
    default = yaml.safe_load((ROOT / "params.yaml").read_text())["variants"]
    assert default == {name: {} for name in variants}  # dvc.yaml's variant matrices are empty: nothing runs
