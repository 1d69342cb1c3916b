"""Each stage of the pipeline, declared once.

A :class:`Stage` names its notebook (or script module), the ``params.yaml`` sections it reads, the stages
it consumes, the function that checks its parameters before any compute, and the metrics it writes:
each with its direction (higher or lower is better) and, where the stage keeps per-item values, the
per-item column the report resamples. Everything else is derived from or checked against this:

- the report's dimensions, directions and resampling (``lib.report``);
- ``lib.experiment``'s checks of a parameter file (it calls each stage's ``check``; nothing re-implements it);
- ``lib.stage``'s checks before the notebook's first cell runs;
- the ``deps`` of ``dvc.yaml``: ``python -m lib.pipeline deps`` prints, per stage, the library files its
  notebook runs (the transitive import closure, module- and function-level imports alike), and a test
  fails when ``dvc.yaml`` lists fewer or more.

An analysis declared with ``variants`` also has a variant stage (``interpret_variant``...), derived from its
declaration by :func:`variant_stage`: the same notebook once per entry of ``params.yaml``'s ``variants.<stage>``.

Layers (``LAYERS``): a module imports only from its own layer or the ones before it; a test enforces it.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from lib.imports import _imports, closure, code_digest, module_file, module_imports  # noqa: F401  (this module's API)

# One-way layers, lowest first: a module may import from its own layer and the layers before it.
# lib.pipeline itself is core: it names the stages' code as strings and imports only lib.imports (the closure).
LAYERS = (
    ("core", ("lib", "lib.storage", "lib.params", "lib.distributed", "lib.results", "lib.plots", "lib.stats", "lib.pipeline", "lib.registry", "lib.project", "lib.imports")),
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
    return Stage(f"{stage.name}_variant", stage.notebook, stage.module,
                 stage.params + (f"{VARIANTS}.{stage.name}.{{variant}}",), stage.upstream, stage.check,
                 stage.metrics, stage.items, stage.item_id, stage.matrix + ("variant",), variant_of=stage.name)


FORGET_UNTESTED = ("flips and PIEs are 0 at dense by definition, so no checkpoint can beat dense: they describe what "
                   "pruning costs, not a sweet spot (shown, outside the family)")

_DECLARED = (
    Stage("data", "notebooks/00_data.ipynb", "lib.stage", ("data",), matrix=(), check="lib.data.shapes:check_stage"),
    Stage("train", "notebooks/01_train.ipynb", "lib.stage", ("models.{arch}", "train.{arch}"), ("data",),
          matrix=("arch", "seed"), check="lib.train:check_stage", metrics=(Metric("test_acc"),)),
    Stage("prune", "notebooks/02_prune.ipynb", "lib.stage", ("prune.{plan}", "retrain.{arch}"), ("data", "train"),
          check="lib.prune.runs:check_stage", metrics=(Metric("test_acc", item=None,
                                                             why_untested="accuracy per checkpoint: no per-image file"),)),
    Stage("interpret", "notebooks/03_interpret.ipynb", "lib.stage", ("interpret",), ("data", "prune"),
          check="lib.interpret.run:check_stage", items="per_image.csv", item_id="image", variants=True, metrics=(
              Metric("rma_*", item="rma_*"), Metric("rra_*", item="rra_*"),
              Metric("pointing_*", item="pointing_*", tested=False), Metric("gini_*", item="gini_*", tested=False),
              Metric("deletion_*", higher_is_better=False, item="deletion_*", tested=False),
              Metric("insertion_*", item="insertion_*", tested=False),
              # Adebayo et al.'s randomisation test: rank correlation of the maps with a random network's
              Metric("sanity_*", higher_is_better=False, tested=False,
                     why_untested="a check of the attribution on a few images, not a dimension"))),
    Stage("discover", "notebooks/04_discover.ipynb", "lib.stage", ("discover.common", "discover.{arch}"),
          ("data", "prune"), check="lib.discover.run:check_stage", items="per_image.csv", item_id="image",
          variants=True, metrics=(Metric("corloc_*", item="hit_*"),)),
    Stage("align", "notebooks/05_align.ipynb", "lib.stage", ("align",), ("data", "prune"),
          check="lib.align.run:check_stage", items="per_image.csv", item_id="trial", variants=True, metrics=(
              Metric("ood_acc", item="ood_score"),
              Metric("ood_acc_all_images", item="ood_score_all_images", tested=False),  # Study A's aggregation
              Metric("shape_bias", why_untested="a ratio of decision counts, not a mean over images"),
              Metric("ec_humans", why_untested="Cohen's kappa is not a mean over images"),
              Metric("ec_dense", why_untested="Cohen's kappa is not a mean over images", of_dense=True))),
    Stage("mis_embeddings", None, "lib.mis.embeddings", ("mis",), ("data",), check="lib.mis.run:check_stage",
          matrix=()),
    Stage("mis", "notebooks/06_mis.ipynb", "lib.stage", ("mis",), ("data", "prune", "mis_embeddings"),
          check="lib.mis.run:check_stage", items="per_unit.csv", item_id="unit",
          metrics=(Metric("mis", item="mis"), Metric("solved", item="solved", tested=False))),
    # Population measures over every seed of an (arch, plan): one run reads every seed's prune output (and RQ1's
    # and RQ2's per-image tables, for the join across dimensions).
    Stage("forget", "notebooks/08_forget.ipynb", "lib.stage", ("forget", "seeds"),
          ("data", "prune", "interpret", "discover"), matrix=("arch", "plan"), check="lib.forget.run:check_stage", items="per_image.csv", item_id="image", population=True, metrics=(
              # What pruning costs, not a sweet spot: 0 at dense by definition, so no checkpoint can beat dense.
              # Kept ``tested`` for the flat summaries (dvc exp show); the report shows them outside the family.
              Metric("flip_share", higher_is_better=False, item="flip", why_untested=FORGET_UNTESTED, of_dense=True),
              Metric("pie_share", higher_is_better=False, item="pie", why_untested=FORGET_UNTESTED, of_dense=True),
              Metric("classes_hurt", higher_is_better=False, of_dense=True,
                     why_untested="a count of classes (Welch's t over seeds), not a mean over images; "
                                  + FORGET_UNTESTED))),
    # The report reads params.yaml's matrix itself (lib.report.read_matrix): tracked, not notebook parameters.
    Stage("report", "notebooks/07_report.ipynb", "lib.stage", (), ("train", "prune", "interpret", "discover", "align",
                                                                    "mis", "forget"), matrix=(),
          tracks=("archs", "plans", "seeds", "variants")),
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


def output_dir(stage: str, arch: str, plan: str | None = None, seed: int = 0, variant: str | None = None,
               root: str | Path = "data") -> Path:
    """The output folder of one matrix item: ``data/train/<arch>/seed<k>``, ``data/<stage>/<arch>/<plan>/seed<k>``,
    ``data/<stage>_variant/<arch>/<plan>/seed<k>/<variant>`` (what dvc.yaml writes; a test checks); a population
    stage, whose matrix has no ``seed`` (``forget``: every seed in one run), ``data/<stage>/<arch>/<plan>``."""
    keys = STAGES[stage].matrix
    parts = ([arch] + ([plan] if "plan" in keys else []) + ([f"seed{int(seed)}"] if "seed" in keys else [])
             + ([variant] if "variant" in keys else []))
    return Path(root, stage, *parts)


def summary_path(stage: str, arch: str, plan: str | None = None, seed: int = 0, variant: str | None = None) -> Path:
    """The flat summary of one matrix item: ``metrics/<stage>/<arch>[-<plan>][-seed<k>][-<variant>].json``."""
    keys = STAGES[stage].matrix
    name = "-".join([arch] + ([plan] if "plan" in keys else []) + ([f"seed{int(seed)}"] if "seed" in keys else [])
                    + ([variant] if "variant" in keys else []))
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


def write_deps(dvc_yaml: str | Path) -> None:
    """Rewrite the ``lib/`` entries of every stage's ``deps`` in ``dvc_yaml`` to the stage's import closure
    (the other entries, comments and layout are kept)."""
    import re

    root = Path(dvc_yaml).resolve().parent
    lines, out, stage, in_deps = Path(dvc_yaml).read_text().split("\n"), [], None, False
    for line in lines:
        if match := re.match(r"^  (\w+):\s*$", line):
            stage = match.group(1)
        if re.match(r"^    deps:\s*$", line):
            in_deps = True
        elif in_deps and re.match(r"^      - ", line):
            if line.strip()[2:].startswith("lib/"):
                continue
        elif in_deps:
            out += [f"      - {path}" for path in stage_closure(STAGES[stage], root)]
            in_deps = False
        out.append(line)
    Path(dvc_yaml).write_text("\n".join(out))


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["deps"]:
        print("usage: python -m lib.pipeline deps [STAGE ...] [--write]\n"
              "  the library files each stage runs (its dvc deps); --write puts them into dvc.yaml")
        return 2
    if "--write" in args:
        write_deps(_root() / "dvc.yaml")
        return 0
    for name in args[1:] or list(STAGES):
        print(f"{name}:")
        for path in stage_closure(STAGES[name]):
            print(f"  - {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
