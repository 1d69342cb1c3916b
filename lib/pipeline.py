"""Each stage of the pipeline, declared once.

A :class:`Stage` names its notebook (or script module), the ``params.yaml`` sections it reads, the stages
it consumes, the function that checks its parameters before any compute, and the metrics it writes:
each with its direction (higher or lower is better) and, where the stage keeps per-item values, the
per-item column the report resamples. Everything else is derived from or checked against this:

- the report's dimensions, directions and resampling (``lib.report``);
- ``lib.experiment``'s checks of a parameter file (it calls each stage's ``check``; nothing re-implements it);
- ``lib.stage``'s checks before the notebook's first cell runs;
- ``dvc.yaml``, all of it (:func:`dvc_yaml`): each stage's command, matrix, params, deps, outs, metrics and
  plots. Its ``lib/`` deps are the library files its notebook runs (the transitive import closure, module- and
  function-level imports alike: ``python -m lib.pipeline deps`` prints them). ``python -m lib.pipeline dvc
  --write`` writes the file, ``--check`` shows how the committed one differs; a test fails while it does.

An analysis declared with ``variants`` also has a variant stage (``interpret_variant``...), derived from its
declaration by :func:`variant_stage`: the same notebook once per entry of ``params.yaml``'s ``variants.<stage>``.

Layers (``LAYERS``): a module imports only from its own layer or the ones before it; a test enforces it.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path

from lib.imports import _imports, closure, code_digest, module_file, module_imports  # noqa: F401  (this module's API)

# One-way layers, lowest first: a module may import from its own layer and the layers before it.
# lib.pipeline itself is core: it names the stages' code as strings and imports only lib.imports (the closure).
LAYERS = (
    ("core", ("lib", "lib.settings", "lib.storage", "lib.params", "lib.distributed", "lib.results", "lib.plots",
              "lib.stats", "lib.pipeline", "lib.registry", "lib.project", "lib.imports")),
    ("data", ("lib.data",)),
    ("models", ("lib.models",)),
    ("train", ("lib.train.recipe", "lib.train.loaders", "lib.distill", "lib.train.loop")),
    ("train stage", ("lib.train.stage", "lib.train")),  # the stage's check and driver; lib.train re-exports all
    ("prune", ("lib.prune",)),
    ("checkpoints", ("lib.checkpoints", "lib.analysis")),
    ("analyses", ("lib.interpret", "lib.discover", "lib.align", "lib.mis", "lib.forget")),
    ("report", ("lib.report",)),
    ("runner", ("lib.stage", "lib.notebook", "lib.outputs", "lib.kernel", "lib.experiment", "lib.vega", "lib.redraw")),
)


@dataclass(frozen=True)
class Metric:
    """A metric a stage writes into ``metrics.json`` (``name`` may hold ``*``, e.g. ``rma_*``: one per attribution).

    ``item``: the column of the stage's per-item table whose mean over items is the metric (``*`` expands as
    in ``name``); ``None`` when the metric is no mean of per-item values (the report shows it, untested).
    ``tested``: whether the report's family of sweet-spot tests includes it. The studies' own dimensions
    are tested; secondary scores are shown beside them but kept out of the family, so that they do not
    dilute the power of the tests the studies' question rests on.
    ``of_dense``: the metric compares a checkpoint with its own network's dense checkpoint (fixed there by
    definition: kappa 1, no flips), so a one-checkpoint control (random_init) has no value of it worth drawing.
    """

    name: str
    higher_is_better: bool = True
    item: str | None = None
    why_untested: str = ""
    tested: bool = True
    of_dense: bool = False

    def matches(self, column: str) -> bool:
        return fnmatch(column, self.name)

    def item_column(self, column: str) -> str | None:
        """The per-item column of metric ``column`` (``corloc_lost`` -> ``hit_lost``)."""
        if self.item is None or "*" not in self.name:
            return self.item
        prefix, suffix = self.name.split("*", 1)
        return self.item.replace("*", column[len(prefix):len(column) - len(suffix)])


@dataclass(frozen=True)
class Plot:
    """A file (or folder) of a stage's output folder that ``dvc plots show`` draws; ``x``/``y``: a table's axes."""

    path: str
    x: str | None = None
    y: str | None = None


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: what it runs, what it reads, what it writes."""

    name: str                              # the dvc stage, its output folder data/<name>/...
    notebook: str | None                   # notebooks/NN_*.ipynb (its twin NN_*.py is what runs); None: a script
    module: str                            # the code it runs: lib.stage (notebooks) or a script module
    params: tuple[str, ...]                # params.yaml sections (``{arch}``/``{plan}``: the matrix item)
    upstream: tuple[str, ...] = ()         # stages whose outputs it reads
    check: str | None = None               # "module:function" checking its parameters before any compute
    metrics: tuple[Metric, ...] = ()
    items: str | None = None               # the per-item table in its output folder
    item_id: str = "image"                 # the item column of that table
    matrix: tuple[str, ...] = ("arch", "plan", "seed")  # dvc.yaml's matrix keys: one run per (arch, plan, seed)
    variants: bool = False                 # also runs once per variant: see :func:`variant_stage`
    variant_of: str | None = None          # set on the variant stage: the stage whose variants it runs
    population: bool = False               # one run over every seed of an (arch, plan): no seed<k> level, no seed axis
    tracks: tuple[str, ...] = ()           # params.yaml sections it reads itself (not as notebook parameters):
    #                                        dvc.yaml's ``params`` are ``params`` then these, so a change re-runs it
    dvc_params: tuple[str, ...] | None = None  # dvc.yaml's ``params`` where narrower than ``params`` + ``tracks``
    # What dvc.yaml's command and outputs are made of (:func:`dvc_stage`). In ``sets``, ``{arch}``, ``{plan}``,
    # ``{seed}`` and ``{variant}`` are the matrix item and ``{<stage>}`` the folder of an upstream stage it reads.
    sets: tuple[str, ...] = ()             # the command's ``--set KEY=VALUE`` (the notebook parameters of its item)
    folder: str | None = None              # its output folder under data/ when it has no matrix (default: its name)
    outs: tuple[str, ...] | None = ()      # the files it writes into its folder besides metrics.json, the
    #                                        per-item table and the executed notebook; None: the folder is one out
    plots: tuple[Plot, ...] = ()           # files of its folder that ``dvc plots show`` draws
    provides: tuple[str, ...] = ()         # the files of its folder that a stage of the same item reads

    def metric(self, column: str) -> Metric | None:
        """The declared metric that ``column`` of the stage's metrics is, if any."""
        return next((m for m in self.metrics if m.matches(column)), None)

    def checker(self):
        if self.check is None:
            return None
        module, function = self.check.split(":")
        return getattr(importlib.import_module(module), function)


VARIANTS = "variants"  # the params.yaml block: {stage: {variant name: parameters replacing its sections'}}


def variant_stage(stage: Stage) -> Stage:
    """The stage that runs ``stage``'s notebook once per (arch, plan, variant), a variant being an entry of
    ``variants.<stage>`` in params.yaml: a name and the parameters that replace those of the stage's sections
    (e.g. RQ1 with Study A's mask mode, RQ2 on a second dataset), on the same checkpoints. Its dvc stage is
    ``<stage>_variant``, its output ``data/<stage>_variant/<arch>/<plan>/seed<k>/<variant>``; the stage itself and
    what the report reads are unchanged, and an empty ``variants.<stage>`` (the default) runs nothing."""
    return replace(stage, name=f"{stage.name}_variant", params=stage.params + (f"{VARIANTS}.{stage.name}.{{variant}}",),
                   matrix=stage.matrix + ("variant",), variants=False, variant_of=stage.name)


FORGET_UNTESTED = ("flips and PIEs are 0 at dense by definition, so no checkpoint can beat dense: they describe what "
                   "pruning costs, not a sweet spot (shown, outside the family)")

ANALYSIS_SETS = ("arch={arch}", "plan={plan}", "source={prune}")  # an analysis scores its item's pruned checkpoints

_DECLARED = (
    Stage("data", "notebooks/00_data.ipynb", "lib.stage", ("data",), matrix=(), check="lib.data.shapes:check_stage",
          folder="shapes", outs=None),
    Stage("train", "notebooks/01_train.ipynb", "lib.stage", ("models.{arch}", "train.{arch}"), ("data",),
          matrix=("arch", "seed"), check="lib.train:check_stage", metrics=(Metric("test_acc"),),
          sets=("arch={arch}", "seed={seed}", "data_dir={data}"), outs=("model.pt",), provides=("model.pt",),
          plots=(Plot("dvclive/plots/metrics", x="step"),)),
    Stage("prune", "notebooks/02_prune.ipynb", "lib.stage", ("prune.{plan}", "retrain.{arch}"), ("data", "train"),
          check="lib.prune.runs:check_stage", metrics=(Metric("test_acc", item=None,
                                                             why_untested="accuracy per checkpoint: no per-image file"),),
          sets=("arch={arch}", "plan_name={plan}", "seed={seed}", "data_dir={data}", "train_dir={train}"),
          outs=("checkpoints", "pruning.json"), provides=("checkpoints", "pruning.json"),
          plots=(Plot("plots/accuracy.csv", x="sparsity", y="test_acc"), Plot("plots/accuracy.png"))),
    Stage("interpret", "notebooks/03_interpret.ipynb", "lib.stage", ("interpret",), ("data", "prune"),
          check="lib.interpret.run:check_stage", items="per_image.csv", item_id="image", variants=True, metrics=(
              Metric("rma_*", item="rma_*"), Metric("rra_*", item="rra_*"),
              Metric("pointing_*", item="pointing_*", tested=False), Metric("gini_*", item="gini_*", tested=False),
              Metric("deletion_*", higher_is_better=False, item="deletion_*", tested=False),
              Metric("insertion_*", item="insertion_*", tested=False),
              # Adebayo et al.'s randomisation test: rank correlation of the maps with a random network's
              Metric("sanity_*", higher_is_better=False, tested=False,
                     why_untested="a check of the attribution on a few images, not a dimension")),
          sets=ANALYSIS_SETS, plots=(Plot("plots/scores.csv", x="sparsity"), Plot("plots/rma_rra.png"),
                                     Plot("plots/scores.png"), Plot("plots/gallery.png"))),
    Stage("discover", "notebooks/04_discover.ipynb", "lib.stage", ("discover.common", "discover.{arch}"),
          ("data", "prune"), check="lib.discover.run:check_stage", items="per_image.csv", item_id="image",
          variants=True, metrics=(Metric("corloc_*", item="hit_*"),), sets=ANALYSIS_SETS,
          plots=(Plot("plots/corloc.csv", x="sparsity", y="corloc_lost"), Plot("plots/corloc.png"),
                 Plot("plots/gallery.png"))),
    # No plots/distortions.png: the notebook draws it only when the run has parametric distortions (a declared
    # output it did not write fails the stage; Study B's dry run did).
    Stage("align", "notebooks/05_align.ipynb", "lib.stage", ("align",), ("data", "prune"),
          check="lib.align.run:check_stage", items="per_image.csv", item_id="trial", variants=True, metrics=(
              Metric("ood_acc", item="ood_score"),
              Metric("ood_acc_all_images", item="ood_score_all_images", tested=False),  # Study A's aggregation
              Metric("shape_bias", why_untested="a ratio of decision counts, not a mean over images"),
              Metric("ec_humans", why_untested="Cohen's kappa is not a mean over images"),
              Metric("ec_dense", why_untested="Cohen's kappa is not a mean over images", of_dense=True)),
          sets=ANALYSIS_SETS, plots=(Plot("plots/alignment.csv", x="sparsity", y="ood_acc"), Plot("plots/accuracy.png"),
                                     Plot("plots/shape_bias.png"), Plot("plots/error_consistency.png"),
                                     Plot("plots/stimuli.png"))),
    # The embeddings depend only on the image pool and the backends, not on the rest of the mis section.
    Stage("mis_embeddings", None, "lib.mis.embeddings", ("mis",), ("data",), check="lib.mis.run:check_stage",
          matrix=(), dvc_params=("mis.pool", "mis.backends"), folder="mis/embeddings", outs=None),
    Stage("mis", "notebooks/06_mis.ipynb", "lib.stage", ("mis",), ("data", "prune", "mis_embeddings"),
          check="lib.mis.run:check_stage", items="per_unit.csv", item_id="unit",
          metrics=(Metric("mis", item="mis"), Metric("solved", item="solved", tested=False)),
          sets=(*ANALYSIS_SETS, "embeddings_dir={mis_embeddings}"),
          plots=(Plot("plots/mis.csv", x="sparsity", y="mis"), Plot("plots/mis_layers.csv"),
                 Plot("plots/mis_classes.csv"), Plot("plots/mis.png"), Plot("plots/mis_units.png"),
                 Plot("plots/mis_layers.png"), Plot("plots/mis_classes.png"), Plot("plots/mis_tasks.png"))),
    # Population measures over every seed of an (arch, plan): one run reads every seed's prune output (and RQ1's
    # and RQ2's per-image tables, for the join across dimensions).
    Stage("forget", "notebooks/08_forget.ipynb", "lib.stage", ("forget", "seeds"),
          ("data", "prune", "interpret", "discover"), matrix=("arch", "plan"), check="lib.forget.run:check_stage",
          items="per_image.csv", item_id="image", population=True, metrics=(
              # What pruning costs, not a sweet spot: 0 at dense by definition, so no checkpoint can beat dense.
              # Kept ``tested`` for the flat summaries (dvc exp show); the report shows them outside the family.
              Metric("flip_share", higher_is_better=False, item="flip", why_untested=FORGET_UNTESTED, of_dense=True),
              Metric("pie_share", higher_is_better=False, item="pie", why_untested=FORGET_UNTESTED, of_dense=True),
              Metric("classes_hurt", higher_is_better=False, of_dense=True,
                     why_untested="a count of classes (Welch's t over seeds), not a mean over images; "
                                  + FORGET_UNTESTED)),
          sets=(*ANALYSIS_SETS, "interpret_dir={interpret}", "discover_dir={discover}"),
          outs=("predictions.csv", "classes.csv", "dimensions.csv"),
          plots=(Plot("plots/forgetting.csv", x="sparsity", y="flip_share"), Plot("plots/forgetting.png"),
                 Plot("plots/classes.png"), Plot("plots/gallery.png"))),
    # The report reads params.yaml's matrix itself (lib.report.read_matrix): tracked, not notebook parameters.
    Stage("report", "notebooks/07_report.ipynb", "lib.stage", (), ("train", "prune", "interpret", "discover", "align",
                                                                    "mis", "forget"), matrix=(),
          tracks=("archs", "plans", "seeds", "variants"), sets=("root=data", "params_file=params.yaml"),
          outs=("checkpoints.json",), plots=(Plot("plots"),)),
)
STAGES = {s.name: s for s in (*_DECLARED, *(variant_stage(s) for s in _DECLARED if s.variants))}

# How to get each kind of input data, for the error that names a missing path.
HOW_TO_GET = {
    "imagenet": "ImageNet-1k (ILSVRC2012, image-net.org) in the standard layout <root>/train/<wnid>/*.JPEG and "
                "<root>/val/<wnid>/*.JPEG (the validation images sorted into class folders, e.g. by valprep.sh)",
    "cifar10": "the CIFAR-10 images as <root>/<class>/*.png",
    "imagenet_sample": "a folder of ImageNet images, one per class in class order (imagenet-sample-images: "
                       "github.com/EliSchwartz/imagenet-sample-images)",
    "tiny_imagenet": "Tiny ImageNet (cs231n.stanford.edu/tiny-imagenet-200.zip; its val/images and "
                     "val/val_annotations.txt are read)",
    "image_folder": "a folder of images (any depth) to distil on",
    "weights": "the weights file (torchvision's ImageNet GoogLeNet: "
               "https://download.pytorch.org/models/googlenet-1378be20.pth)",
    "voc": "PASCAL VOC 2012 (python -c \"from lib.data.download import download_voc; download_voc('data', '2012')\" "
           "writes data/VOCdevkit/VOC2012)",
    "coco": "COCO in the coco128 semantic_segmentation layout",
    "boxes": "the dataset in its own layout (lib.data.boxes)",
    "mvh": "model-vs-human's datasets: lib.data.modelvshuman.download(name, root) for each of them, and the human "
           "trials (bethgelab/model-vs-human, raw-data/<dataset>/*.csv) in <root>/raw-data",
    "shapes": "the embedded dataset (dvc repro data, or notebooks/00_data.ipynb)",
    "pool": "a folder of images for MIS, e.g. ImageNet's <root>/train (a seeded subset of `limit` images is used)",
}

ANALYSES = ("interpret", "discover", "align", "mis")
# Analyses over a population: one run over every seed of an (arch, plan) (``Stage.population``), output
# data/<stage>/<arch>/<plan>/ without the seed<k> level, rows keyed (arch, plan, step). The report merges their
# rows into every seed's (a population number) and shows them outside the family of tests.
POPULATION_ANALYSES = tuple(name for name, stage in STAGES.items() if stage.population)

# The matrix keys and the params.yaml lists they run over (``variant``: the entries of ``variants.<stage>``).
MATRIX_LISTS = {"arch": "archs", "plan": "plans", "seed": "seeds"}


def _item_parts(stage: Stage, arch: str | None, plan: str | None, seed: str, variant: str | None) -> list[str]:
    """The names of one matrix item, in folder order (``seed``: the seed's label, e.g. ``seed0``)."""
    keys = stage.matrix
    return ([arch] if "arch" in keys else []) + ([plan] if "plan" in keys else []) + (
        [seed] if "seed" in keys else []) + ([variant] if "variant" in keys else [])


def output_dir(stage: str, arch: str | None = None, plan: str | None = None, seed: int = 0,
               variant: str | None = None, root: str | Path = "data") -> Path:
    """The output folder of one matrix item: ``data/train/<arch>/seed<k>``, ``data/<stage>/<arch>/<plan>/seed<k>``,
    ``data/<stage>_variant/<arch>/<plan>/seed<k>/<variant>`` (what dvc.yaml writes); a population stage, whose
    matrix has no ``seed`` (``forget``: every seed in one run), ``data/<stage>/<arch>/<plan>``; a stage without a
    matrix, ``data/<its folder>`` (``data/shapes``)."""
    declared = STAGES[stage]
    if not declared.matrix:
        return Path(root, declared.folder or declared.name)
    return Path(root, stage, *_item_parts(declared, arch, plan, f"seed{int(seed)}", variant))


def summary_path(stage: str, arch: str, plan: str | None = None, seed: int = 0, variant: str | None = None) -> Path:
    """The flat summary of one matrix item: ``metrics/<stage>/<arch>[-<plan>][-seed<k>][-<variant>].json``."""
    name = "-".join(_item_parts(STAGES[stage], arch, plan, f"seed{int(seed)}", variant))
    return Path("metrics", stage, f"{name}.json")


def check_matrix(params: dict, source: str = "params.yaml") -> None:
    """The lists the stages' matrix runs over (``archs``, ``plans``, ``seeds``): each a non-empty list without
    repeats (an empty one runs no train, prune or analysis stage, while `dvc repro` reports the pipeline up to
    date); seeds non-negative integers; every arch and plan with its sections. Raises ValueError naming the fix."""
    for key, sections in (("archs", ("models", "train", "retrain")), ("plans", ("prune",)), ("seeds", ())):
        values = params.get(key)
        if not isinstance(values, list) or not values:
            raise ValueError(f"{source}: `{key}` must be a non-empty list (the stages' matrix runs over it), got "
                             f"{values!r}; e.g. {key}: {EXAMPLES[key]}")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{source}: `{key}` lists {repeated} more than once; list each once")
        if key == "seeds":
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 0]
            if bad:
                raise ValueError(f"{source}: `seeds` must be non-negative integers, got {bad}; e.g. seeds: [0, 1, 2]")
        for section in sections:
            missing = [v for v in values if v not in (params.get(section) or {})]
            if missing:
                raise ValueError(f"{source}: `{key}` lists {missing}, which `{section}` does not define; add "
                                 f"{section}.{missing[0]} or remove it from {key}")


EXAMPLES = {"archs": "[cnn, vit]", "plans": "[lrr]", "seeds": "[0] (or [0, 1, 2]: three networks per step)"}

# MIS scores the network's output layers apart from its hidden units: the stage's ``mis`` (and the report's test
# of it) averages the hidden units only.
MIS_OUTPUT_LAYERS = ("logits", "softmax")


def stage_of(dvc_name: str) -> Stage:
    """The declaration of a dvc stage name (``prune@cnn-lrr`` -> ``prune``)."""
    name = dvc_name.split("@")[0]
    if name not in STAGES:
        raise KeyError(f"no stage {name!r}; stages: {sorted(STAGES)}")
    return STAGES[name]


def stage_for_notebook(notebook: str | Path) -> Stage | None:
    name = Path(notebook).name
    return next((s for s in STAGES.values() if s.notebook and Path(s.notebook).name == name), None)


# ----------------------------------------------------------------------------- import closure
def _root() -> Path:
    return Path(__file__).resolve().parent.parent


def twin(notebook: str | Path) -> Path:
    """The jupytext percent twin of a notebook (``notebooks/01_train.ipynb`` -> ``notebooks/01_train.py``):
    the code and markdown alone, what DVC depends on and what ``lib.stage`` runs (``jupytext.toml``)."""
    return Path(notebook).with_suffix(".py")


def notebook_code(notebook: str | Path) -> str:
    """The code of a notebook as its twin holds it (the ``.py``; the ``.ipynb``'s code cells without one)."""
    path = twin(notebook)
    if path.is_file():
        return path.read_text()
    cells = json.loads(Path(notebook).read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def notebook_imports(notebook: str | Path) -> set[str]:
    return {m for m in _imports(notebook_code(notebook), "lib") if module_file(m) is not None}


def stage_closure(stage: Stage, root: Path | None = None) -> list[str]:
    """The library files a stage runs, relative to the repository root, sorted. For a notebook, what the notebook
    imports: the runner (``lib.stage``) that checks its parameters and publishes its folder computes nothing the
    outputs depend on, so a change to it reruns no stage."""
    root = root or _root()
    start = notebook_imports(root / stage.notebook) if stage.notebook else {stage.module}
    files = {module_file(m, root) for m in closure(start, root)}
    return sorted(str(f.relative_to(root)) for f in files)


# ----------------------------------------------------------------------------- dvc.yaml, from the declarations
ITEM = {key: f"${{item.{key}}}" for key in ("arch", "plan", "seed", "variant")}  # dvc.yaml's matrix item
DVC_YAML_HEADER = """\
# GENERATED from the stage declarations in lib/pipeline.py (STAGES) by `python -m lib.pipeline dvc --write`: do not
# edit it by hand. To add or change a stage, declare it there and regenerate; `python -m lib.pipeline dvc --check`
# shows what differs, and tests/test_pipeline.py fails while this file is not what the declarations give.
# Every notebook stage runs its notebook's jupytext twin headless (python -m lib.stage), its parameters from
# params.yaml; its lib/ deps are every library file it runs (the transitive import closure); every output is
# persist: true (lib.stage replaces a stage's folder only once the notebook has run to its end).
"""


def _folder(stage: Stage, reader: Stage) -> str:
    """The folder of ``stage``'s outputs that ``reader`` reads, in dvc.yaml's placeholders: the folder of the
    reader's own item; for a population reader, the one above its seeds; for a reader without matrix, all of them."""
    if not stage.matrix:
        return str(output_dir(stage.name))
    if not reader.matrix:
        return f"data/{stage.name}"
    folder = Path("data", stage.name, *_item_parts(stage, ITEM["arch"], ITEM["plan"], f"seed{ITEM['seed']}",
                                                   ITEM["variant"]))
    return str(folder.parent if reader.population and "seed" in stage.matrix else folder)


def _fill(template: str, stage: Stage) -> str:
    """``template`` with ``{arch}``... as dvc.yaml's matrix item and ``{<upstream stage>}`` as its folder."""
    try:
        return template.format(**ITEM, **{name: _folder(STAGES[name], stage) for name in stage.upstream})
    except KeyError as error:
        raise ValueError(f"lib/pipeline.py: stage {stage.name!r} names {{{error.args[0]}}} in {template!r}, which is "
                         f"neither a matrix key ({', '.join(ITEM)}) nor a stage it reads (upstream: "
                         f"{', '.join(stage.upstream) or 'none'}); add it to `upstream` or fix the name") from None


def _upstream_deps(stage: Stage) -> list[str]:
    """What ``stage`` reads of the stages it consumes: the files of its own item that each provides, or a whole
    folder (a stage without matrix, every seed for a population stage, every item for the report)."""
    deps = []
    for name in stage.upstream:
        upstream = STAGES[name]
        folder = _folder(upstream, stage)
        if not upstream.matrix or not stage.matrix or stage.population:
            deps.append(folder)
        elif not upstream.provides:
            raise ValueError(f"lib/pipeline.py: stage {stage.name!r} reads {name!r} of its own matrix item, but "
                             f"{name!r} declares no `provides` (the files of its folder a later stage reads)")
        else:
            deps += [f"{folder}/{path}" for path in upstream.provides]
    return deps


def _command_lines(stage: Stage) -> list[str]:
    """The stage's command, in the lines dvc.yaml shows it (joined by spaces, it is the command)."""
    own = _folder(stage, stage)
    lines = [" ".join(["python", "-m", stage.module, *([stage.notebook] if stage.notebook else []), own])]
    if stage.params:
        lines.append(" ".join(["--params", *(_fill(p, stage) for p in stage.params)]))
    if stage.sets:
        lines.append(" ".join(["--set", *(_fill(s, stage) for s in stage.sets)]))
    if _summarized(stage):
        lines.append(f"--summary {_summary(stage)}")
    return lines


def _summarized(stage: Stage) -> bool:
    """Whether the stage writes a flat summary: its metrics that the report tests (``lib.results.summarize``)."""
    return any(metric.tested for metric in stage.metrics)


def _summary(stage: Stage) -> str:
    """:func:`summary_path` in dvc.yaml's placeholders."""
    return str(Path("metrics", stage.name, "-".join(
        _item_parts(stage, ITEM["arch"], ITEM["plan"], f"seed{ITEM['seed']}", ITEM["variant"])) + ".json"))


def dvc_stage(stage: Stage, root: Path | None = None) -> dict:
    """The ``dvc.yaml`` entry of ``stage``: matrix, command, deps, params, outs, metrics, plots."""
    folder, persist = _folder(stage, stage), {"persist": True}
    entry = {}
    if stage.matrix:
        lists = {**MATRIX_LISTS, "variant": f"{VARIANTS}.{stage.variant_of}"}
        entry["matrix"] = {key: f"${{{lists[key]}}}" for key in stage.matrix}
    entry["cmd"] = " ".join(_command_lines(stage))
    entry["deps"] = ([str(twin(stage.notebook))] if stage.notebook else []) + _upstream_deps(stage) + stage_closure(
        stage, root)
    params = stage.dvc_params if stage.dvc_params is not None else stage.params + stage.tracks
    if params:
        entry["params"] = [_fill(p, stage) for p in params]
    if stage.outs is None:
        entry["outs"] = [{folder: persist}]
    else:
        names = ["metrics.json", *([stage.items] if stage.items else []), *stage.outs,
                 *([Path(stage.notebook).name] if stage.notebook else [])]
        entry["outs"] = [{f"{folder}/{name}": persist} for name in names]
    if _summarized(stage):
        entry["metrics"] = [{_summary(stage): {"cache": False, **persist}}]
    if stage.plots:
        entry["plots"] = [{f"{folder}/{plot.path}": {**({"x": plot.x} if plot.x else {}),
                                                      **({"y": plot.y} if plot.y else {}), **persist}}
                          for plot in stage.plots]
    return entry


def _comment(stage: Stage) -> list[str]:
    """The comment above a stage in dvc.yaml, where its matrix is not the usual one."""
    if stage.variant_of:
        return [f"  # {stage.variant_of} once per variant: an entry of params.yaml's variants.{stage.variant_of} "
                "(its parameters replace the", "  # stage's), on the same checkpoints (lib.pipeline.variant_stage); "
                "none by default."]
    if stage.population:
        return ["  # One run per (arch, plan) over every seed of params.yaml (a population measure)."]
    return []


def _scalar(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def dvc_yaml(root: Path | None = None) -> str:
    """The text of ``dvc.yaml``: every declared stage (:func:`dvc_stage`), in declaration order."""
    import textwrap

    import yaml

    stages = {name: dvc_stage(stage, root) for name, stage in STAGES.items()}
    lines = DVC_YAML_HEADER.splitlines() + ["stages:"]
    for name, entry in stages.items():
        lines += ([""] if lines[-1] != "stages:" else []) + [*_comment(STAGES[name]), f"  {name}:"]
        for key, value in entry.items():
            if key == "cmd":
                command = _command_lines(STAGES[name])
                lines += [f"    cmd: {entry['cmd']}"] if len(entry["cmd"]) <= 100 else [
                    "    cmd: >-", *(f"      {part}" for line in command for part in textwrap.wrap(
                        line, 114, break_long_words=False, break_on_hyphens=False))]
            elif isinstance(value, dict):
                lines += [f"    {key}:", *(f"      {k}: {v}" for k, v in value.items())]
            else:
                lines.append(f"    {key}:")
                for item in value:
                    if isinstance(item, str):
                        lines.append(f"      - {item}")
                        continue
                    (path, options), = item.items()
                    lines += [f"      - {path}:", *(f"          {k}: {_scalar(v)}" for k, v in options.items())]
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != {"stages": stages}:  # a value YAML reads otherwise (quoting): fix the layout above
        raise ValueError("lib.pipeline.dvc_yaml: the text does not read back as the declared stages")
    return text


def check_dvc_yaml(path: str | Path) -> str:
    """A unified diff from the file at ``path`` to this repository's :func:`dvc_yaml` (empty when they are the same)."""
    import difflib

    path = Path(path)
    current = path.read_text() if path.is_file() else ""
    return "".join(difflib.unified_diff(current.splitlines(True), dvc_yaml().splitlines(True), f"{path} (as it is)",
                                        f"{path} (from lib/pipeline.py)"))


def write_dvc_yaml(path: str | Path) -> Path:
    from lib.storage import write_bytes

    return write_bytes(path, dvc_yaml().encode())


USAGE = """\
usage: python -m lib.pipeline deps [STAGE ...]
       python -m lib.pipeline dvc [--check | --write]
  deps          the library files each stage runs (its lib/ deps in dvc.yaml)
  dvc           dvc.yaml as the stage declarations give it, on stdout
  dvc --check   how the repository's dvc.yaml differs from that (a diff; exit status 1 when it differs)
  dvc --write   write it into dvc.yaml ("deps --write" does the same)"""


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    dvc_file = _root() / "dvc.yaml"
    if args[:1] == ["dvc"] and args[1:] in ([], ["--check"], ["--write"]) or args == ["deps", "--write"]:
        if "--write" in args:
            print(f"wrote {write_dvc_yaml(dvc_file)}")
        elif "--check" in args:
            diff = check_dvc_yaml(dvc_file)
            print(diff or f"{dvc_file} is what lib/pipeline.py declares", end="\n" if not diff else "")
            return 1 if diff else 0
        else:
            print(dvc_yaml(), end="")
        return 0
    if args[:1] != ["deps"] or any(name not in STAGES for name in args[1:]):
        print(USAGE)
        return 2
    for name in args[1:] or list(STAGES):
        print(f"{name}:")
        for path in stage_closure(STAGES[name]):
            print(f"  - {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
