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
from lib import storage
from lib.results import MANIFEST, list_checkpoints

NOT_A_DIRECTORY = ("source must be a prune stage's output directory (data/prune/<arch>/<plan>, holding "
                   f"{MANIFEST}), got {{kind}}. Analyses no longer prune a model on the fly: prune it with notebook "
                   "02 first (a one-shot plan with recipe.epochs 0 prunes without retraining, e.g. "
                   "presets/lite0.params.yaml for the pretrained EfficientNet-Lite0) and pass its output directory")


def validate_source(source: str | Path, arch: str | None = None) -> None:
    """Fail before any compute if ``source`` cannot be read (not a directory path, missing manifest) or holds a
    checkpoint its prune stage did not write (:func:`verify_checkpoints`); ``arch``: the stage's architecture
    label, checked against the source's dense checkpoint and the manifest's model
    (:func:`lib.models.registry.check_arch`)."""
    if not isinstance(source, (str, Path)):
        raise TypeError(NOT_A_DIRECTORY.format(kind=f"a {type(source).__name__} ({source!r})"))
    if not (Path(source) / MANIFEST).is_file():
        raise FileNotFoundError(f"source: {source}/{MANIFEST} is missing: run the prune stage first "
                                "(dvc repro prune, or notebooks/02_prune.ipynb)")
    records = verify_checkpoints(source)
    if arch is not None and records:
        from lib.models.registry import check_arch

        # the manifest's model (what the prune stage loaded) and the stage's arch label, against the dense file
        check_arch(records[0]["path"], arch=arch, model=storage.load_json(Path(source) / MANIFEST).get("model"))


def verify_checkpoints(source: str | Path) -> list[dict]:
    """The manifest's records, once every checkpoint file is the one the prune stage wrote (its SHA-256 as the
    manifest records it); raises CheckpointError naming the first file that differs."""
    manifest_path = Path(source) / MANIFEST
    records = list_checkpoints(source)
    rerun = "rerun the prune stage (dvc repro prune@<arch>-<plan>, or notebooks/02_prune.ipynb)"
    unhashed = [r["file"] for r in records if not r.get("sha256")]
    if unhashed:
        raise storage.CheckpointError(f"{manifest_path} records no SHA-256 for {unhashed[0]}"
                                      f"{f' and {len(unhashed) - 1} more' if len(unhashed) > 1 else ''}: it was "
                                      f"written before checkpoints were hashed, so they cannot be verified; {rerun}")
    for record in records:
        path = Path(record["path"])
        if not path.is_file():
            raise storage.CheckpointError(f"checkpoint {path}, listed in {manifest_path}, is missing; restore it "
                                          f"(dvc checkout) or {rerun}")
        if storage.file_sha256(path) != record["sha256"]:
            raise storage.CheckpointError(
                f"checkpoint {path} is not the file the prune stage wrote (its SHA-256 differs from the one "
                f"{manifest_path} records): it was replaced or changed since; restore it (dvc checkout) or {rerun}")
    return records


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
