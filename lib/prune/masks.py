"""Which tensors are prunable, how masks are attached and folded, and sparsity accounting.

While a model is being retrained its masks are parametrizations (``torch.nn.utils.parametrize``:
``weight = original * mask``, recomputed at every access), so masked weights stay exactly zero and
the gradient of a removed weight is zero. Parametrizations rather than ``torch.nn.utils.prune``'s
forward hooks: attention blocks that read ``self.qkv.weight`` without calling the module
(torchvision's Swin) or read ``in_proj_weight`` directly (``nn.MultiheadAttention``) would
otherwise see stale weights. Checkpoints store the folded weights plus the masks (see
``lib.models.save_checkpoint``), keyed by the parameter's name in the state dict.
"""

from __future__ import annotations

import copy
from fnmatch import fnmatchcase
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

# A prunable kind -> the module types whose weight it covers. "linear" includes the packed q/k/v
# input projection of nn.MultiheadAttention (torchvision's ViT), which is a linear layer stored
# as a bare parameter rather than an nn.Linear.
LAYER_TYPES = {"conv": (nn.Conv2d,), "linear": (nn.Linear, nn.MultiheadAttention)}


class Prunable(NamedTuple):
    """A prunable weight: unpacks as ``(name, module)`` like the spine's pairs."""

    name: str
    module: nn.Module

    @property
    def param(self) -> str:
        return "in_proj_weight" if isinstance(self.module, nn.MultiheadAttention) else "weight"

    @property
    def is_bias(self) -> bool:
        return False

    @property
    def label(self) -> str:
        """The tensor's key in per-layer reports: the module's name for its weight, ``<name>.bias`` for a bias."""
        return self.name

    @property
    def key(self) -> str:
        """The weight's name in the state dict (the key of its mask in a checkpoint)."""
        return f"{self.name}.{self.param}" if self.name else self.param

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self.module, self.param)


class PrunableBias(Prunable):
    """The bias of a prunable layer (Study B's ``global_unstructured`` ranks biases with the weights)."""

    __slots__ = ()

    @property
    def param(self) -> str:
        return "in_proj_bias" if isinstance(self.module, nn.MultiheadAttention) else "bias"

    @property
    def is_bias(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return self.key


def as_prunable(p) -> Prunable:
    """A :class:`Prunable` (or :class:`PrunableBias`) as it is, or a ``(name, module)`` pair as a weight."""
    return p if isinstance(p, Prunable) else Prunable(*p)


def _excluded(name: str, patterns) -> bool:
    """A module name matches an exclude pattern (fnmatch: ``conv1``, ``aux*``, ``*.attn.qkv``), or lies inside
    a module that does."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatchcase(prefix, e) for e in patterns for prefix in prefixes)


def is_attention_qkv(name: str, module: nn.Module) -> bool:
    """The packed query/key/value projection of an attention layer: ``nn.MultiheadAttention.in_proj_weight``
    (torchvision's ViT) or an ``nn.Linear`` named ``qkv`` (timm's ViT, torchvision's and timm's Swin)."""
    return isinstance(module, nn.MultiheadAttention) or (isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] == "qkv")


def prunable_parameters(model: nn.Module, layers=("conv", "linear"), exclude=(), include_bias: bool = False,
                        attention_qkv: bool = True) -> list[Prunable]:
    """Every prunable weight of ``model``, in module order.

    ``layers``: which kinds ("conv", "linear"); ``exclude``: module names or fnmatch patterns to leave dense
    (e.g. the classifier, ``lib.models.get_spec(name).classifier``; GoogLeNet's stem ``conv1``, ``conv2``,
    ``conv3`` and auxiliary heads ``aux*``); a name excludes its submodules too. ``include_bias``: the layers'
    biases are prunable too (each listed after its weight). ``attention_qkv`` False leaves attention's packed
    Q/K/V projections dense (:func:`is_attention_qkv`; Study A's code, whose ViT keeps them in
    ``in_proj_weight``, never prunes them).
    """
    unknown = set(layers) - set(LAYER_TYPES)
    if unknown:
        raise ValueError(f"unknown prunable layer kind(s) {sorted(unknown)}; choose from {sorted(LAYER_TYPES)}")
    types = tuple(t for k in layers for t in LAYER_TYPES[k])
    exclude = tuple(e for e in exclude if e)
    modules = dict(model.named_modules())
    missing = [e for e in exclude if not any(_excluded(n, (e,)) for n in modules if n)]
    if missing:
        raise ValueError(f"excluded module(s) {missing} are not in {type(model).__name__}")
    chosen = []
    for name, m in modules.items():
        if not isinstance(m, types) or _excluded(name, exclude):
            continue
        if not attention_qkv and is_attention_qkv(name, m):
            continue
        if isinstance(m, nn.MultiheadAttention) and not m._qkv_same_embed_dim:
            raise ValueError(f"{name}: nn.MultiheadAttention with separate q/k/v projections is not supported")
        if "parametrizations" in name.split("."):
            continue
        chosen.append(Prunable(name, m))
        bias = "in_proj_bias" if isinstance(m, nn.MultiheadAttention) else "bias"
        if include_bias and isinstance(getattr(m, bias, None), torch.Tensor):
            chosen.append(PrunableBias(name, m))
    if not chosen:
        raise ValueError(f"no prunable layers of kinds {layers} in {type(model).__name__} (excluding {exclude})")
    return chosen


class WeightMask(nn.Module):
    """The parametrization ``tensor * mask`` (the mask is a buffer of the tensor's dtype)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, tensor):
        return tensor * self.mask


def _split(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def _mask_of(module: nn.Module, param: str) -> WeightMask | None:
    if parametrize.is_parametrized(module, param):
        return next((p for p in module.parametrizations[param] if isinstance(p, WeightMask)), None)
    return None


def get_mask(module: nn.Module, param: str = "weight") -> torch.Tensor:
    """The current keep-mask (bool) of ``module.<param>``: all True when it is not masked."""
    mask = _mask_of(module, param)
    if mask is not None:
        return mask.mask.bool()
    legacy = getattr(module, f"{param}_mask", None)  # torch.nn.utils.prune's re-parametrisation
    if legacy is not None:
        return legacy.bool()
    return torch.ones_like(getattr(module, param), dtype=torch.bool)


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks of every masked tensor, keyed by the tensor's name in the folded state dict."""
    out = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if parametrize.is_parametrized(module):
            for param in module.parametrizations:
                mask = _mask_of(module, param)
                if mask is not None:
                    out[prefix + param] = mask.mask.detach().bool().clone()
        for buffer, value in module.named_buffers(recurse=False):
            if buffer.endswith("_mask") and hasattr(module, buffer[:-5] + "_orig"):
                out[prefix + buffer[:-5]] = value.detach().bool().clone()
    return out


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Attach masks (e.g. loaded from a checkpoint) so that retraining keeps the removed weights at zero.

    A tensor that is already masked gets the new mask (masks of a schedule only ever shrink).
    """
    modules = dict(model.named_modules())
    for key, mask in masks.items():
        name, param = _split(key)
        module = modules.get(name)
        if module is None or not isinstance(getattr(module, param, None), torch.Tensor):
            raise KeyError(f"mask {key} does not match any tensor of {type(model).__name__}")
        tensor = getattr(module, param)
        if tuple(mask.shape) != tuple(tensor.shape):
            raise ValueError(f"mask {key} has shape {tuple(mask.shape)}, the tensor {tuple(tensor.shape)}")
        if hasattr(module, f"{param}_mask") and hasattr(module, f"{param}_orig"):
            prune.remove(module, param)
        value = mask.to(device=tensor.device, dtype=tensor.dtype)
        existing = _mask_of(module, param)
        if existing is not None:
            existing.mask = value
        else:
            parametrize.register_parametrization(module, param, WeightMask(value))


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that is safe with masks: torch's deepcopy of a parametrized module shares
    its generated class with the original, so folding the copy's masks would break the original."""
    replica = copy.deepcopy(model)
    for module in replica.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
            module.__class__ = type(cls.__name__, cls.__bases__, namespace)
    return replica


def fold_masks(model: nn.Module) -> None:
    """Make pruning permanent: every masked tensor becomes a plain parameter ``original * mask``."""
    for _, module in list(model.named_modules()):
        if parametrize.is_parametrized(module):
            for param in list(module.parametrizations):
                if _mask_of(module, param) is not None:
                    parametrize.remove_parametrizations(module, param, leave_parametrized=True)
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)


def remove_smallest(keep: torch.Tensor, score: torch.Tensor, n_removed: int) -> None:
    """Flip to False the lowest-scoring True entries of the flat ``keep`` until ``n_removed`` are False."""
    alive = keep.nonzero().squeeze(1)
    k = n_removed - (keep.numel() - alive.numel())
    if k > 0:
        keep[alive[torch.topk(score[alive], k, largest=False, sorted=False).indices]] = False


@torch.no_grad()
def global_magnitude_keeps(params: list[Prunable], target: float) -> list[torch.Tensor]:
    """Keep-masks that remove ``target`` of all the weights of ``params`` by global L1 magnitude (the weights
    already masked count as removed): ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``."""
    keeps = [get_mask(p.module, p.param).clone() for p in params]
    flat_keep = torch.cat([k.reshape(-1) for k in keeps])
    scores = torch.cat([p.weight.detach().abs().reshape(-1) for p in params])
    remove_smallest(flat_keep, scores, round(target * flat_keep.numel()))
    return [part.view_as(k) for part, k in zip(flat_keep.split([k.numel() for k in keeps]), keeps)]


def prune_step(model: nn.Module, params: list[Prunable], amount: float) -> None:
    """Study A's step: remove ``amount`` of the *remaining* weights by global L1 magnitude."""
    if not 0 <= amount < 1:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    params = [as_prunable(p) for p in params]
    total = sum(p.weight.numel() for p in params)
    masked = sum(int((~get_mask(p.module, p.param)).sum()) for p in params)
    remaining = total - masked
    if remaining:
        keeps = global_magnitude_keeps(params, (masked + round(amount * remaining)) / total)
        apply_masks(model, {p.key: keep for p, keep in zip(params, keeps)})


def sparsity_report(model: nn.Module, params: list[Prunable] | None = None) -> dict:
    """Zeros among the prunable weights, globally and per layer, and among all parameters."""
    params = [as_prunable(p) for p in (params if params is not None else prunable_parameters(model))]
    per_layer, zeros, total = {}, 0, 0
    for p in params:
        weight = p.weight.detach()
        z, n = int((weight == 0).sum()), weight.numel()
        per_layer[p.label] = {"params": n, "zeros": z, "sparsity": z / n}
        zeros, total = zeros + z, total + n
    all_params = sum(p.numel() for p in _plain_parameters(model))
    all_zeros = sum(int((p.detach() == 0).sum()) for p in _plain_parameters(model))
    return {"sparsity": zeros / total, "prunable_params": total, "prunable_zeros": zeros,
            "params": all_params, "zeros": all_zeros, "per_layer": per_layer}


def _plain_parameters(model: nn.Module):
    """Every parameter as the forward pass sees it (masked tensors with their masks applied)."""
    for module in model.modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue  # the originals of masked tensors: counted through their module below
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                yield getattr(module, name)
        yield from module.parameters(recurse=False)
