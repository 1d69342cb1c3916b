"""The registry, the factory, and the checkpoint format shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lib import storage
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lib.registry import Registry

CHECKPOINT_FORMAT = "pruning-beyond-accuracy/checkpoint-v1"


@dataclass(frozen=True)
class ModelSpec:
    """What the analyses need to know about an architecture besides its weights.

    family: "cnn" or "vit" (decides e.g. Grad-CAM versus attention maps).
    cam_layer: dotted name of the module whose output Grad-CAM uses (last conv block).
    feature_layer: dotted name of the module whose output is the "last feature map" (LOST).
    classifier: dotted name of the final classifier, so pruning can exclude it.
    mean, std: the input normalisation the weights expect (ImageNet's unless the weights say otherwise).
    nhwc_modules: dotted names of modules whose 4-d outputs, and their submodules', are (N, H, W, C), not
    (N, C, H, W) (Swin's ``features`` and ``norm``; only its patch embedding's convolution, features.0.0, is
    not); the analyses that read activations permute those first (:meth:`nhwc`).
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str = "cnn"
    cam_layer: str | None = None
    feature_layer: str | None = None
    classifier: str | None = None
    defaults: dict = field(default_factory=dict)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    nhwc_modules: tuple = ()
    auxiliary: tuple = ()

    def nhwc(self, layer: str) -> bool:
        """Whether the 4-d output of module ``layer`` (a dotted name) is laid out (N, H, W, C)."""
        return any(layer == m or layer.startswith(m + ".") for m in self.nhwc_modules)

    def is_auxiliary(self, layer: str) -> bool:
        """Whether module ``layer`` (a dotted name) belongs to a training-only auxiliary head."""
        from fnmatch import fnmatchcase

        parts = layer.split(".")
        return any(fnmatchcase(".".join(parts[:i]), a) for a in self.auxiliary for i in range(1, len(parts) + 1))


_REGISTRY = Registry("model")


def register_model(name: str, family: str = "cnn", cam_layer=None, feature_layer=None, classifier=None,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, **defaults):
    """Decorator: ``@register_model("small_cnn", cam_layer="features.-1")`` on a builder function."""

    def wrap(builder):
        _REGISTRY.add(name, ModelSpec(name, builder, family, cam_layer, feature_layer, classifier, dict(defaults),
                                      tuple(mean), tuple(std)))
        return builder

    return wrap


def get_layer(model: nn.Module, dotted: str) -> nn.Module:
    """``get_layer(model, "features.-1")``: dotted path where integers index (negatives from the end)."""
    module = model
    for part in dotted.split("."):
        if part.lstrip("-").isdigit():
            module = list(module.children())[int(part)]
        else:
            module = getattr(module, part)
    return module


def available_models() -> list[str]:
    return sorted(_REGISTRY) + ["torchvision/<name>", "timm/<name>"]


# Analysis layers of the common torchvision architectures (same names the papers use): family, cam_layer,
# feature_layer, classifier. Swin has no class token and its stages give feature maps, as a CNN's do (in
# (N, H, W, C) layout), so the analyses treat it as a CNN: Grad-CAM on ``permute`` (the last stage after the
# final norm, as (N, C, H, W)), patch features and unit activations from the stages (``nhwc_modules``).
_KNOWN_LAYERS = {
    "resnet": ("cnn", "layer4", "layer4", "fc"),
    "googlenet": ("cnn", "inception5b", "inception5b", "fc"),
    "vgg": ("cnn", "features", "features", "classifier"),
    "efficientnet": ("cnn", "features", "features", "classifier"),
    "mobilenet": ("cnn", "features", "features", "classifier"),
    "vit": ("vit", "encoder.layers", "encoder.layers", "heads"),
    "swin": ("cnn", "permute", "features.-1", "head"),
}
# Training-only auxiliary classifiers (torchvision GoogLeNet and Inception v3 built with aux_logits=True).
_AUXILIARY = {"googlenet": ("aux1", "aux2"), "inception": ("AuxLogits",)}
# timm ViTs (``blocks``, ``head``), as the repository's small_vit: the attention maps need timm's blocks.
_TIMM_VIT = ("vit", "blocks.-1", "blocks.-1", "head")


def _external_spec(name: str) -> ModelSpec:
    source, _, model_name = name.partition("/")
    family, cam, feat, cls = next((v for k, v in _KNOWN_LAYERS.items() if model_name.startswith(k)), ("cnn", None, None, None))
    nhwc = ("features", "norm") if source == "torchvision" and model_name.startswith("swin") else ()
    if source == "torchvision":
        import torchvision

        if model_name not in torchvision.models.list_models():
            raise ValueError(f"unknown torchvision model {model_name!r}; see torchvision.models.list_models()")

        def builder(num_classes, **kwargs):
            return torchvision.models.get_model(model_name, weights=None, num_classes=num_classes, **kwargs)

    elif source == "timm":
        import timm

        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models()")
        if model_name.startswith(("vit", "deit")):
            family, cam, feat, cls = _TIMM_VIT
        elif model_name.startswith("swin"):  # stages without a (N, C, H, W) module to read: no analysis layers
            family, cam, feat, cls = "vit", None, None, "head"

        def builder(num_classes, **kwargs):
            return timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)

    else:
        raise ValueError(f"unknown model source {source!r} in {name!r}; use torchvision/<name> or timm/<name>")
    auxiliary = next((v for k, v in _AUXILIARY.items() if model_name.startswith(k)), ()) if source == "torchvision" else ()
    return ModelSpec(name, builder, family, cam, feat, cls, nhwc_modules=nhwc, auxiliary=auxiliary)


def get_spec(name: str) -> ModelSpec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "/" in name:
        return _external_spec(name)
    raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")


def create_model(name: str, num_classes: int = 1000, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """Build a registered model. ``weights``: a local state-dict or checkpoint file (never a download)."""
    spec = get_spec(name)
    model = spec.builder(num_classes=num_classes, **{**spec.defaults, **kwargs})
    if weights is not None:
        state = storage.load_torch(weights)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model.load_state_dict(state)
    return model


def save_checkpoint(path, model: nn.Module, name: str, num_classes: int, model_kwargs: dict | None = None,
                    masks: dict[str, torch.Tensor] | None = None, **meta) -> Path:
    """Write a self-describing checkpoint atomically.

    The state dict holds plain (folded) weights; ``masks`` (parameter name -> bool tensor) records
    which weights pruning removed, so pruning can continue from the file and the zeros are known.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": {"name": name, "num_classes": int(num_classes), "kwargs": dict(model_kwargs or {})},
        "state_dict": state,
        "masks": {k: v.detach().cpu().bool() for k, v in (masks or {}).items()},
        "meta": meta,
    }
    return storage.save_torch(path, payload)


def load_checkpoint(path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Returns (model in eval mode, payload without the state dict).
    """
    payload = storage.load_torch(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise storage.CheckpointError(
            f"{path} is not a checkpoint of this library (format {CHECKPOINT_FORMAT}); "
            "rerun the stage that writes it, or load plain weights with create_model(..., weights=path)."
        )
    # the state dict holds every weight: a package's pretrained weights (model_kwargs pretrained) need no loading
    info = {**payload["model"], "kwargs": {k: v for k, v in payload["model"]["kwargs"].items() if k != "pretrained"}}
    model = _built_from_state(info, payload["state_dict"])
    if model is None:
        model = create_model(info["name"], num_classes=info["num_classes"], **info["kwargs"])
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as error:
            raise storage.CheckpointError(f"{path} does not match model {info['name']}: {error}") from error
    model.eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}


def _built_from_state(info: dict, state: dict) -> nn.Module | None:
    """The model built on the meta device and given the checkpoint's tensors, skipping the random
    initialisation that loading would overwrite (seconds for a ViT-B on a CPU, at every checkpoint of every
    analysis). None where that cannot be done (a builder that needs real tensors, a tensor that the state
    dict does not hold, such as a non-persistent buffer, or a mismatch): the caller builds it normally."""
    try:
        with torch.device("meta"):
            model = create_model(info["name"], num_classes=info["num_classes"], **info["kwargs"])
        model.load_state_dict(state, assign=True)
    except Exception:  # noqa: BLE001 -- any failure here only means the ordinary path is taken
        return None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        return None
    return model


def check_arch(path, arch: str | None = None, model: str | None = None, info: dict | None = None) -> dict:
    """Refuse a checkpoint whose stored architecture is not the one a stage was given (before any compute).

    ``model``: a model name (``small_cnn``), compared with the checkpoint's stored model name. ``arch``: the
    pipeline's architecture label (``cnn``), compared with the label the train stage stored (``meta.arch``);
    for checkpoints without one, a label that names a model family (``cnn``/``vit``) is compared with the
    stored model's family. ``info``: the payload without weights, if already loaded. Returns the payload's info.
    """
    if info is None:
        payload = storage.load_torch(path)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise storage.CheckpointError(f"{path} is not a checkpoint of this library (format {CHECKPOINT_FORMAT})")
        info = {k: v for k, v in payload.items() if k != "state_dict"}
    stored = info["model"]["name"]
    stored_arch = (info.get("meta") or {}).get("arch")
    if model is not None and model != stored:
        raise storage.CheckpointError(f"{path} holds a {stored} model, but the stage was given model={model!r}; "
                                 "point it at that model's checkpoint, or fix the model parameter")
    if arch is not None:
        if stored_arch is not None and stored_arch != arch:
            raise storage.CheckpointError(f"{path} was trained as arch {stored_arch!r} ({stored}), but the stage was given "
                                     f"arch={arch!r}; point it at the checkpoint of {arch!r} (e.g. data/train/{arch})")
        if stored_arch is None and arch in ("cnn", "vit"):
            family = get_spec(stored).family
            if family != arch:
                raise storage.CheckpointError(f"{path} holds a {stored} model (a {family}), but the stage was given "
                                         f"arch={arch!r}; point it at the checkpoint of {arch!r}")
    return info
