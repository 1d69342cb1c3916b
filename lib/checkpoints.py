"""What every analysis iterates over: the checkpoints of a pruning run, as (record, model) pairs.

A source is either
- a pruning stage's output directory (``data/prune/<arch>/<method>``): its manifest's checkpoints, or
- a mapping for the real-data presets, a pretrained model pruned one-shot by global L1 magnitude
  *without retraining* at each sparsity, e.g.
  ``{"model": "efficientnet_lite0", "model_kwargs": {"pretrained": True}, "sparsities": [0, 0.3, 0.5, 0.7]}``
  (optional: ``layers`` (default conv + linear), ``exclude_classifier`` (default True), ``num_classes``).

Records always carry ``step``, ``sparsity`` and ``test_acc`` (None where no test split was scored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from torch import nn

from lib.models import create_model, get_spec, load_checkpoint
from lib.prune.masks import fold_masks, prunable_parameters, prune_step, sparsity_report

PRETRAINED_KEYS = {"model", "model_kwargs", "sparsities", "layers", "exclude_classifier", "num_classes"}


def validate_source(source: str | Path | dict, arch: str | None = None) -> None:
    """Fail before any compute if a source cannot be read (missing stage output, bad keys, bad sparsity);
    ``arch``: the stage's architecture label, checked against the source's dense checkpoint
    (:func:`lib.models.registry.check_arch`)."""
    if isinstance(source, dict):
        unknown = set(source) - PRETRAINED_KEYS
        if unknown or "model" not in source or "sparsities" not in source:
            raise ValueError(f"a pretrained source needs 'model' and 'sparsities' (optional: "
                             f"{sorted(PRETRAINED_KEYS - {'model', 'sparsities'})}); got unknown {sorted(unknown)}")
        get_spec(source["model"])
        bad = [s for s in source["sparsities"] if not 0 <= s < 1]
        if bad:
            raise ValueError(f"sparsities must be in [0, 1), got {bad}")
    else:
        from lib.prune.schedules import MANIFEST

        if not (Path(source) / MANIFEST).is_file():
            raise FileNotFoundError(f"{source}/{MANIFEST} is missing: run the pruning stage first "
                                    "(dvc repro prune, or notebooks/02_pruning.ipynb)")
        if arch is not None:
            from lib.models.registry import check_arch
            from lib.prune.schedules import list_checkpoints

            records = list_checkpoints(source)
            if records:
                check_arch(records[0]["path"], arch=arch)


def prune_global_magnitude(model: nn.Module, sparsity: float, layers=("conv", "linear"), exclude=()) -> dict:
    """Prune ``model`` in place to ``sparsity`` of its prunable weights by global L1 magnitude; fold the masks."""
    params = prunable_parameters(model, layers, exclude)
    if sparsity > 0:
        prune_step(model, params, sparsity)
        fold_masks(model)
    return sparsity_report(model, params)


def iter_checkpoints(source: str | Path | dict) -> Iterator[tuple[dict, nn.Module]]:
    """Yield (record, model in eval mode) for every checkpoint of ``source``, one model at a time."""
    validate_source(source)
    if isinstance(source, dict):
        spec = get_spec(source["model"])
        exclude = (spec.classifier,) if source.get("exclude_classifier", True) and spec.classifier else ()
        for step, sparsity in enumerate(sorted(source["sparsities"])):
            model = create_model(source["model"], num_classes=source.get("num_classes", 1000),
                                 **source.get("model_kwargs", {}))
            report = prune_global_magnitude(model, sparsity, tuple(source.get("layers", ("conv", "linear"))), exclude)
            yield {"step": step, "target": sparsity, "sparsity": report["sparsity"], "test_acc": None,
                   "model": source["model"]}, model.eval()
    else:
        from lib.prune.schedules import list_checkpoints

        for record in list_checkpoints(source):
            model, info = load_checkpoint(record["path"])
            yield {**{k: v for k, v in record.items() if k != "accounting"}, "model": info["model"]["name"]}, model
