"""Unit activations: the spatial mean of every channel of chosen layers on every image of a pool.

One batched forward pass per model with forward hooks. A layer is a dotted module name (as
``lib.models.get_layer`` reads it) or one of the two output layers ``"logits"`` and
``"softmax"`` (the classifier's output before and after the softmax). When no output layer is
asked for, the pass stops after the last hooked module has run.

Unit sets (``resolve_layers``): ``"block_outputs"`` (the default; every block of the main stack, then
``logits`` and ``softmax``) or ``"conv_channels"`` (Study B's: every convolution's output channels, before its
batch norm, plus the classifier's outputs ``logits``; training-only auxiliary heads are not run in evaluation and
are left out). A pruned filter's output is constant over the pool (zero, or the bias it keeps), so its unit is a
constant unit and is dropped before averaging, as Study B drops the units of pruned filters.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lib.data.image_pool import ImagePool
from lib.models import get_layer, get_spec
from lib.pipeline import MIS_OUTPUT_LAYERS as OUTPUT_LAYERS
from lib.storage import progress_bar as tqdm

CONSTANT_RANGE = 1e-8  # units whose activation range over the pool is below this are constant (skipped)


class _StopForward(Exception):
    """Raised by the last hook when nothing after it is needed."""


def default_layers(model: nn.Module, model_name: str) -> list[str]:
    """Every block of the model's main stack, then ``logits`` and ``softmax``.

    The stack is the container of the spec's ``feature_layer`` (e.g. ``features`` of ``small_cnn``,
    ``_blocks`` of EfficientNet-Lite, ``blocks`` of a ViT, ``features`` of a Swin); for CNNs only
    children holding a convolution count as blocks (pooling layers between blocks do not), for
    transformer stacks (ViT blocks; Swin stages, whose outputs are (N, H, W, C)) every child does.
    Other architectures: pass ``layers`` explicitly.
    """
    spec = get_spec(model_name)
    if not spec.feature_layer:
        raise ValueError(f"model {model_name!r} names no feature_layer in its spec: pass `layers` explicitly")
    parent = spec.feature_layer.rsplit(".", 1)[0] if "." in spec.feature_layer else ""
    container = get_layer(model, parent) if parent else model
    prefix = f"{parent}." if parent else ""
    blocks = [f"{prefix}{name}" for name, child in container.named_children()
              if not spec.is_auxiliary(f"{prefix}{name}")
              and (spec.family == "vit" or spec.nhwc(f"{prefix}{name}")
                   or any(isinstance(m, nn.Conv2d) for m in child.modules()))]
    if not blocks:
        raise ValueError(f"found no blocks under {parent or 'the model'} of {model_name!r}: pass `layers` explicitly")
    return blocks + list(OUTPUT_LAYERS)


UNIT_SETS = ("block_outputs", "conv_channels")


def conv_channel_layers(model: nn.Module, model_name: str) -> list[str]:
    """Every ``nn.Conv2d`` of the model (its output: before any batch norm), then ``logits`` (Study B's units).

    Modules of the spec's training-only auxiliary heads (GoogLeNet's ``aux1``, ``aux2``) are left out."""
    spec = get_spec(model_name)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and not spec.is_auxiliary(name)]
    if not convs:
        raise ValueError(f"model {model_name!r} has no convolution: units 'conv_channels' do not apply")
    return convs + ["logits"]


def resolve_layers(model: nn.Module, model_name: str, layers=None) -> list[str]:
    """The layers of a unit set: None or ``"block_outputs"`` (:func:`default_layers`), ``"conv_channels"``
    (:func:`conv_channel_layers`), or an explicit list of module names (and ``logits``/``softmax``)."""
    if layers is None or layers == "block_outputs":
        return default_layers(model, model_name)
    if layers == "conv_channels":
        return conv_channel_layers(model, model_name)
    if isinstance(layers, str):
        raise ValueError(f"unknown unit set {layers!r}; choose one of {UNIT_SETS} or give a list of layers")
    return list(layers)


def check_layers(model: nn.Module, layers: list[str]) -> None:
    """Fail before any compute when a layer name does not resolve."""
    if not layers:
        raise ValueError("no layers to analyse: give at least one module name, or 'logits'/'softmax'")
    for name in layers:
        if name in OUTPUT_LAYERS:
            continue
        try:
            get_layer(model, name)
        except (AttributeError, IndexError) as error:
            raise ValueError(f"layer {name!r} is not a module of {type(model).__name__} ({error}); "
                             f"use dotted names of model.named_modules(), or {OUTPUT_LAYERS}") from None


def _channel_means(output, prefix_tokens: int, nhwc: bool = False) -> torch.Tensor:
    """(B, C) spatial means of a module's output: conv maps (B, C, H, W) (or (B, H, W, C) if ``nhwc``)
    or token sequences (B, T, D)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim == 4:
        return output.float().mean((1, 2) if nhwc else (2, 3))
    if output.ndim == 3:  # tokens: the spatial positions are the patch tokens (class/register tokens excluded)
        return output[:, prefix_tokens:].float().mean(1)
    if output.ndim == 2:
        return output.float()
    raise ValueError(f"cannot take channel means of an output of shape {tuple(output.shape)}")


@torch.inference_mode()
def unit_activations(model: nn.Module, pool: ImagePool, layers: list[str], mean, std, batch_size: int = 128,
                     progress: bool = False, nhwc_layers=()) -> dict[str, torch.Tensor]:
    """``{layer: (units, images)}`` float tensors: every unit's spatial-mean activation on every pool image.

    ``mean``/``std``: the input normalisation the model expects (``get_spec(name).mean/.std``);
    ``nhwc_layers``: the layers whose 4-d outputs are (N, H, W, C) (``get_spec(name).nhwc(layer)``).
    """
    check_layers(model, layers)
    hooked = [name for name in layers if name not in OUTPUT_LAYERS]
    need_output = any(name in OUTPUT_LAYERS for name in layers)
    prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
    device = next(model.parameters()).device
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    fired: set[str] = set()

    def hook_for(name):
        def hook(_module, _inputs, output):
            collected[name].append(_channel_means(output, prefix_tokens, name in nhwc_layers).cpu())
            fired.add(name)
            if not need_output and len(fired) == len(hooked):
                raise _StopForward

        return hook

    handles = [get_layer(model, name).register_forward_hook(hook_for(name)) for name in hooked]
    was_training = model.training
    model.eval()
    try:
        batches = pool.batches(batch_size, mean, std)
        for x in tqdm(batches, total=-(-len(pool) // batch_size), desc="unit activations", leave=False,
                      disable=not progress):
            fired.clear()
            try:
                logits = model(x.to(device)).float().cpu()
            except _StopForward:
                continue
            if "logits" in collected:
                collected["logits"].append(logits)
            if "softmax" in collected:
                collected["softmax"].append(logits.softmax(1))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    n_batches = -(-len(pool) // batch_size)
    wrong = [name for name, parts in collected.items() if len(parts) != n_batches]
    if wrong:
        raise RuntimeError(f"layers {wrong} did not run exactly once per forward pass; "
                           "choose modules that the model calls once (not a shared or unused module)")
    return {name: torch.cat(parts).T.contiguous() for name, parts in collected.items()}


def constant_units(activations: torch.Tensor) -> torch.Tensor:
    """Bool (units,): the activation range over the pool is below ``CONSTANT_RANGE`` (or not finite)."""
    spread = activations.amax(1) - activations.amin(1)
    constant = ~(spread >= CONSTANT_RANGE)
    if not torch.isfinite(activations).all():
        warnings.warn("some unit activations are not finite; those units are treated as constant")
        constant |= ~torch.isfinite(activations).all(1)
    return constant
