"""Models that start from a local weights file (the pruning presets' pretrained models, Study B's GoogLeNet).

A pretrained source: ``{"model": "cifar_resnet20", "weights": "path/to/file", "num_classes": 10,
"model_kwargs": {}, "drop_keys": [], "recorded_acc": 0.9178}`` (``drop_keys``: prefixes of weight names
that the model does not have, e.g. the untrained auxiliary heads of torchvision's GoogLeNet file;
``recorded_acc``: the accuracy its publisher reports, kept beside ours).
"""

from __future__ import annotations

from pathlib import Path

from lib import storage
from lib.models.registry import create_model, get_spec

WEIGHTS_KEYS = ("weights", "drop_keys", "recorded_acc")  # the weights file and what is known of it
PRETRAINED_KEYS = {"model", "num_classes", "model_kwargs", *WEIGHTS_KEYS}


def check_pretrained(source: dict, exists: bool = True, what: str = "pretrained") -> None:
    """A pretrained source's keys and model name (and, with ``exists``, that its weights file is there): the one
    check of a source, for the prune stage's ``models`` and, completed by the stage's model, the train stage's
    ``pretrained``."""
    unknown = set(source) - PRETRAINED_KEYS
    if unknown or "model" not in source:
        raise ValueError(f"{what} needs 'model' (optional: {sorted(PRETRAINED_KEYS - {'model'})}); "
                         f"unknown: {sorted(unknown)}")
    get_spec(source["model"])
    described = sorted({"drop_keys", "recorded_acc"} & set(source))
    if described and not source.get("weights"):
        raise ValueError(f"{what}: {described} describe a weights file, but 'weights' is not given; give the file "
                         "or remove them")
    if exists and source.get("weights") and not Path(source["weights"]).is_file():
        raise FileNotFoundError(f"{what}: weights file {source['weights']} does not exist")


def load_pretrained(source: dict):
    """The model of a pretrained source, its weights loaded from the local file (none: a fresh model)."""
    model = create_model(source["model"], num_classes=source.get("num_classes", 1000), **source.get("model_kwargs", {}))
    if source.get("weights"):
        state = storage.load_torch(source["weights"])
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        drop = tuple(source.get("drop_keys", ()))
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model.load_state_dict({k: v for k, v in state.items() if not (drop and k.startswith(drop))})
    return model
