"""The notebook-as-stage contract: parameters in dvc.yaml and presets exist in their notebooks, bad input stops early."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib import stage

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _stage_commands():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing: s.cmd for s in repo.index.stages}


def _parse(cmd: str):
    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "lib.stage"], f"stage command does not run a notebook: {cmd}"
    rest = argv[3:]
    notebook, out_dir, sections, sets, mode = rest[0], rest[1], [], [], None
    tokens = rest[2:]
    if "--summary" in tokens:  # the flat summary's path (metrics/<stage>/<item>.json): no parameter
        at = tokens.index("--summary")
        tokens = tokens[:at] + tokens[at + 2:]
    for token in tokens:
        if token in ("--params", "--set"):
            mode = token
        elif mode == "--params":
            sections.append(token)
        else:
            sets.append(token)
    return notebook, out_dir, sections, sets


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_has_one_parameters_cell_with_out_dir(notebook):
    params = stage.notebook_parameters(notebook)
    assert "out_dir" in params and str(params["out_dir"]).startswith("data/smoke")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(notebook):
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_every_papermill_parameter_in_dvc_yaml_exists_in_its_notebook():
    commands = _stage_commands()
    assert {"data", "train@cnn-0", "prune@cnn-lrr-0", "prune@cnn-lrr_retrained-0",
            "prune@cnn-random_init-0", "report"} <= set(commands)
    notebook_stages = {a: c for a, c in commands.items() if c.startswith("python -m lib.stage ")}
    used = {_parse(c)[0] for c in notebook_stages.values()}
    assert used == {f"notebooks/{p.name}" for p in NOTEBOOKS}, "every notebook is a stage, every stage a notebook"
    for address, cmd in notebook_stages.items():
        notebook, out_dir, sections, sets = _parse(cmd)
        parameters = {**stage.load_params(sections, ROOT / "params.yaml"), **stage.parse_sets(sets), "out_dir": out_dir}
        stage.check_parameters(ROOT / notebook, parameters)  # raises ParameterError naming the unknown ones


# Notebook presets; presets/*.params.yaml are whole-pipeline parameter files (tests/test_study_presets.py).
NOTEBOOK_PRESETS = sorted(p for p in (ROOT / "presets").glob("*.yaml") if not p.name.endswith(".params.yaml"))


@pytest.mark.parametrize("preset", NOTEBOOK_PRESETS, ids=lambda p: p.name)
def test_every_preset_parameter_exists_in_its_notebook(preset):
    notebook, out_dir, parameters = stage.load_preset(preset)
    stage.check_parameters(ROOT / notebook, {**parameters, "out_dir": str(out_dir)})


def test_unknown_parameter_is_refused_before_a_kernel_starts(tmp_path):
    with pytest.raises(stage.ParameterError, match="has no parameter"):
        stage.check_parameters(ROOT / "notebooks/01_train.ipynb", {"epochz": 3})
    with pytest.raises(stage.ParameterError, match="not in"):
        stage.load_params(["train.resnet9000"], ROOT / "params.yaml")


def test_the_runner_itself_imports_no_torch():
    """torch (3 s) is imported by a stage's check, while the kernel starts beside it (lib.stage.start_kernel), or not
    at all (the report): the runner's own modules must not pull it in."""
    code = "import sys, lib.stage, lib.storage, lib.pipeline, lib.params; print('torch' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "False"


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lib.stage", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_bad_name_exits_with_the_fix_and_leaves_outputs_intact(tmp_path):
    out = tmp_path / "train"
    out.mkdir()
    (out / "model.pt").write_text("previous result")
    result = _run_cli("notebooks/01_train.ipynb", str(out), "--set", "epocs=3")
    assert result.returncode == 2 and "has no parameter(s) ['epocs']" in result.stderr
    assert (out / "model.pt").read_text() == "previous result"


@pytest.mark.parametrize("sets,message", [  # both caught by the stage's declared check, before a kernel starts
    (["model=resnet9000"], "unknown model 'resnet9000'"),
    (["data_dir=nowhere"], "data_dir = nowhere (the embedded dataset"),
])
@pytest.mark.slow
def test_cli_bad_value_stops_the_notebook_before_compute_and_leaves_outputs_intact(tmp_path, sets, message, tiny_shapes):
    out = tmp_path / "train"
    out.mkdir()
    (out / "model.pt").write_text("previous result")
    (out / stage.MARKER).write_text('{"notebook": "01_train.ipynb"}')  # an earlier output of this stage
    if not any(s.startswith("data_dir=") for s in sets):
        sets.append(f"data_dir={tiny_shapes}")
    result = _run_cli("notebooks/01_train.ipynb", str(out), "--set", *sets)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert (out / "model.pt").read_text() == "previous result"


def test_sparsity_outside_the_unit_interval_is_refused():
    from lib.prune import PruningPlan

    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        PruningPlan.from_dict({"schedule": "lrr", "threshold": 1.5})


def test_preset_file_needs_its_keys(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"notebook": "x.ipynb"}))
    with pytest.raises(stage.ParameterError, match="out_dir"):
        stage.load_preset(tmp_path / "p.yaml")
