"""What every analysis iterates over: the checkpoints of a pruning run, as (record, model) pairs.

A source is a prune stage's output directory (``data/prune/<arch>/<plan>``, or a run directory of a
notebook 02 grid): its manifest's checkpoints. Analyses never prune: a pretrained model pruned one-shot
without retraining is a plan of notebook 02 (``schedule: oneshot`` with ``recipe.epochs: 0``), whose
checkpoints every analysis then shares (``presets/lite0.params.yaml`` runs EfficientNet-Lite0 that way).

Records always carry ``step``, ``sparsity`` and ``test_acc`` (None where no test split was scored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from torch import nn

from lib.models import load_checkpoint
from lib.prune.masks import fold_masks, prunable_parameters, prune_step, sparsity_report
from lib.results import MANIFEST, list_checkpoints

NOT_A_DIRECTORY = ("source must be a prune stage's output directory (data/prune/<arch>/<plan>, holding "
                   f"{MANIFEST}), got {{kind}}. Analyses no longer prune a model on the fly: prune it with notebook "
                   "02 first (a one-shot plan with recipe.epochs 0 prunes without retraining, e.g. "
                   "presets/lite0.params.yaml for the pretrained EfficientNet-Lite0) and pass its output directory")


def validate_source(source: str | Path, arch: str | None = None) -> None:
    """Fail before any compute if ``source`` cannot be read (not a directory path, missing manifest);
    ``arch``: the stage's architecture label, checked against the source's dense checkpoint
    (:func:`lib.models.registry.check_arch`)."""
    if not isinstance(source, (str, Path)):
        raise TypeError(NOT_A_DIRECTORY.format(kind=f"a {type(source).__name__} ({source!r})"))
    if not (Path(source) / MANIFEST).is_file():
        raise FileNotFoundError(f"source: {source}/{MANIFEST} is missing: run the prune stage first "
                                "(dvc repro prune, or notebooks/02_prune.ipynb)")
    if arch is not None:
        from lib.models.registry import check_arch

        records = list_checkpoints(source)
        if records:
            check_arch(records[0]["path"], arch=arch)


def prune_global_magnitude(model: nn.Module, sparsity: float, layers=("conv", "linear"), exclude=()) -> dict:
    """Prune ``model`` in place to ``sparsity`` of its prunable weights by global L1 magnitude; fold the masks.
    (MIS's collapse control, a model destroyed on purpose; the checkpoints analysed come from notebook 02.)"""
    params = prunable_parameters(model, layers, exclude)
    if sparsity > 0:
        prune_step(model, params, sparsity)
        fold_masks(model)
    return sparsity_report(model, params)


def iter_checkpoints(source: str | Path) -> Iterator[tuple[dict, nn.Module]]:
    """Yield (record, model in eval mode) for every checkpoint of ``source``, one model at a time."""
    validate_source(source)
    for record in list_checkpoints(source):
        model, info = load_checkpoint(record["path"])
        yield {**{k: v for k, v in record.items() if k != "accounting"}, "model": info["model"]["name"]}, model
