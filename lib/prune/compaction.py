"""Compaction: physically remove the channels that pruning emptied, keeping the function unchanged.

``compact(model, example_input)`` returns a smaller dense copy of a masked model. Channels are
coupled: a residual sum ties the output channels of every layer that feeds it, a concatenation
maps a consumer's input channels to several producers, and the input channels of the next layers
go with them. torch-pruning's dependency graph finds these groups; a channel of a group is removed
only when that is exact:

- every layer that *produces* it is dead there (zero filter and bias, zero batch-norm scale and
  shift: the channel is zero everywhere, as :class:`lib.prune.methods.Filters` leaves it), or
- every layer that *consumes* it ignores it (zero input column, as
  :class:`lib.prune.methods.Connections` leaves it), and it does not reach the model's output.

So a filter removed from one layer that feeds a residual sum stays (as zeros) until every layer
feeding that sum has lost it; a connection removed from one of several consumers stays until all
of them have. Groups through layer norms, attention and other channel-mixing modules are left
alone. The result is checked numerically against the masked model.

A compacted model is saved as its state dict plus each module's shape attributes and rebuilt by
shrinking a freshly built model (:func:`save_compacted`, :func:`load_compacted`): no pickled
module, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from lib import storage
from lib.prune.graph import output_modules, training_trace
from lib.prune.masks import copy_model, fold_masks

COMPACT_FORMAT = "pruning-beyond-accuracy/compacted-v1"
SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "normalized_shape", "num_channels", "num_groups")


FUNCTIONAL_ATTENTION = ("ShiftedWindowAttention", "ShiftedWindowAttentionV2")


class CompactionError(RuntimeError):
    """The compacted model does not compute what the masked one does (or cannot be built)."""


def _customized_pruners() -> dict:
    import torch_pruning as tp

    from lib.models.cifar_resnet import PadShortcut

    class PadShortcutPruner(tp.pruner.function.BasePruningFunc):
        """Option-A shortcut: removing an input channel drops its entry of ``index``; removing an
        output channel renumbers the others (an input channel whose output is gone is marked -1)."""

        def prune_out_channels(self, layer, idxs):
            keep = [c for c in range(layer.out_channels) if c not in set(idxs)]
            renumber = {old: new for new, old in enumerate(keep)}
            layer.index = torch.tensor([renumber.get(int(i), -1) for i in layer.index], dtype=torch.long)
            layer.out_channels = len(keep)
            return layer

        def prune_in_channels(self, layer, idxs):
            keep = [c for c in range(len(layer.index)) if c not in set(idxs)]
            layer.index = layer.index[keep]
            return layer

        def get_out_channels(self, layer):
            return layer.out_channels

        def get_in_channels(self, layer):
            return len(layer.index)

    return {PadShortcut: PadShortcutPruner()}


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """Attention blocks and their projections: their channels mix across heads; never compacted."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__:
            out += list(m.modules())
    return out


def _dead(tensor: torch.Tensor, idx: int, dim: int = 0) -> bool:
    return bool((tensor.detach().select(dim, idx) == 0).all())


def _verdicts(DG, item) -> tuple[str, list[bool]]:
    """(role, dead per index) of one group item: role is producer, consumer, pass or blocked."""
    import torch_pruning as tp

    from lib.models.cifar_resnet import PadShortcut

    module, handler, idxs = item.dep.target.module, item.dep.handler, item.idxs
    is_out, is_in = DG.is_out_channel_pruning_fn(handler), DG.is_in_channel_pruning_fn(handler)
    passive = (tp.ops._ElementWiseOp, tp.ops._ConcatOp, tp.ops._SplitOp, tp.ops._ReshapeOp, tp.ops._SliceOp,
               tp.ops._ExpandOp, tp.ops._UnbindOp, nn.PReLU)
    if isinstance(module, passive):
        return "pass", []
    if isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels and module.groups > 1:
        bias = module.bias
        return "producer", [_dead(module.weight, i) and (bias is None or _dead(bias, i)) for i in idxs]
    if isinstance(module, (nn.Conv2d, nn.Linear)) and getattr(module, "groups", 1) == 1:
        if is_out and not is_in:
            bias = module.bias
            return "producer", [_dead(module.weight, i) and (bias is None or _dead(bias, i)) for i in idxs]
        if is_in and not is_out:
            return "consumer", [_dead(module.weight, i, 1) for i in idxs]
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not module.affine:
            return "producer", [False] * len(idxs)
        return "producer", [_dead(module.weight, i) and _dead(module.bias, i) for i in idxs]
    if isinstance(module, PadShortcut):
        if is_out and not is_in:
            return "producer", [int(i) not in set(module.index.tolist()) for i in idxs]
        if is_in and not is_out:
            return "consumer", [int(module.index[i]) < 0 for i in idxs]
    return "blocked", []


def removable_channels(DG, group) -> list[int]:
    """Root indices of ``group`` whose channel can be removed without changing the function."""
    n = len(group[0].root_idxs)
    state = {r: {"producer": [], "consumer": [], "blocked": False} for r in group[0].root_idxs}
    for item in group:
        role, dead = _verdicts(DG, item)
        if role == "pass":
            continue
        for k, root in enumerate(item.root_idxs):
            if root not in state:
                continue
            if role == "blocked":
                state[root]["blocked"] = True
            else:
                state[root][role].append(dead[k])
    out = []
    for root, s in state.items():
        if s["blocked"]:
            continue
        if (s["producer"] and all(s["producer"])) or (s["consumer"] and all(s["consumer"])):
            out.append(root)
    return out if len(out) < n else out[:-1]  # never empty a whole group


def _traced_forward(model, example_input):
    with training_trace(model):
        return model(example_input)


@torch.no_grad()
def _max_error(a: nn.Module, b: nn.Module, example_input: torch.Tensor) -> tuple[float, float]:
    x = torch.randn(example_input.shape, generator=torch.Generator().manual_seed(0))
    ya, yb = a.eval()(x), b.eval()(x)
    return float((ya - yb).abs().max()), float(ya.abs().max())


def compact(model: nn.Module, example_input: torch.Tensor, verify: bool = True, rtol: float = 1e-4) -> nn.Module:
    """A physically smaller copy of ``model`` (masks folded) that computes the same outputs.

    ``example_input``: one input batch of the right size (at least 2 images: traced in training
    mode). Raises :class:`CompactionError` if the copy differs from the model by more than
    ``rtol`` of the output's magnitude.
    """
    import torch_pruning as tp

    unsupported = sorted({type(m).__name__ for m in model.modules() if type(m).__name__ in FUNCTIONAL_ATTENTION})
    if unsupported:  # torch-pruning cannot see their projections (used as bare tensors) and its trace explodes
        raise CompactionError(f"compaction does not support {unsupported} (torchvision's Swin); prune it with masks only")
    reference = copy_model(model).cpu().eval()
    fold_masks(reference)
    example_input = example_input.cpu()
    if example_input.shape[0] < 2:
        example_input = example_input.expand(2, *example_input.shape[1:])
    compacted = copy.deepcopy(reference)
    protected = output_modules(compacted, example_input) + _attention_modules(compacted)
    try:
        DG = tp.DependencyGraph().build_dependency(compacted, example_inputs=example_input, forward_fn=_traced_forward,
                                                   customized_pruners=_customized_pruners(), verbose=False)
    except Exception as error:
        raise CompactionError(f"torch-pruning cannot trace {type(model).__name__}: {error}") from error
    with torch.no_grad():
        for group in DG.get_all_groups(ignored_layers=protected, root_module_types=(nn.Conv2d, nn.Linear)):
            idxs = removable_channels(DG, group)
            if idxs:
                group.prune(idxs=idxs, record_history=False)
    compacted.eval()
    if verify:
        error, scale = _max_error(reference, compacted, example_input)
        if error > rtol * max(scale, 1.0):
            raise CompactionError(f"the compacted {type(model).__name__} differs from the masked model by {error:.3g} "
                                  f"(outputs up to {scale:.3g}): an operation between two layers does not map zero "
                                  "to zero; compaction is only exact for ReLU-like activations")
    return compacted


def shape_record(model: nn.Module) -> dict:
    """Each module's shape attributes and non-persistent buffers: what a fresh model needs to be
    shrunk to a compacted one."""
    shapes, buffers = {}, {}
    for name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in SHAPE_ATTRS if isinstance(getattr(module, a, None), (int, tuple))}
        if attrs:
            shapes[name] = {a: list(v) if isinstance(v, tuple) else v for a, v in attrs.items()}
        for b in module._non_persistent_buffers_set:
            if getattr(module, b, None) is not None:
                buffers[f"{name}.{b}" if name else b] = getattr(module, b).detach().cpu().clone()
    return {"shapes": shapes, "buffers": buffers}


def save_compacted(path: str | Path, model: nn.Module, name: str, num_classes: int, model_kwargs: dict | None = None,
                   **meta) -> Path:
    """Write a compacted model (state dict + shapes; no pickled modules) atomically."""
    payload = {"format": COMPACT_FORMAT,
               "model": {"name": name, "num_classes": int(num_classes), "kwargs": dict(model_kwargs or {})},
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
               **shape_record(model), "meta": meta}
    return storage.save_torch(path, payload)


def shrink(model: nn.Module, state_dict: dict, shapes: dict, buffers: dict) -> nn.Module:
    """Resize a freshly built ``model`` in place to the shapes of a compacted one and load its weights."""
    modules = dict(model.named_modules())
    for name, attrs in shapes.items():
        if name not in modules:
            raise storage.CheckpointError(f"module {name!r} of the compacted model is not in {type(model).__name__}")
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for key, tensor in {**state_dict, **buffers}.items():
        owner_name, _, attr = key.rpartition(".")
        owner = modules[owner_name]
        current = getattr(owner, attr, None)
        if isinstance(current, nn.Parameter):
            if current.shape != tensor.shape:
                setattr(owner, attr, nn.Parameter(torch.empty(tensor.shape, dtype=tensor.dtype)))
        elif attr in owner._buffers:
            owner._buffers[attr] = tensor.clone() if key in buffers else torch.empty(tensor.shape, dtype=tensor.dtype)
    model.load_state_dict(state_dict)
    return model.eval()


def load_compacted(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a model written by :func:`save_compacted` (``weights_only=True``): (model, info)."""
    from lib.models import create_model

    payload = storage.load_torch(path)
    if not isinstance(payload, dict) or payload.get("format") != COMPACT_FORMAT:
        raise storage.CheckpointError(f"{path} is not a compacted model of this library (format {COMPACT_FORMAT})")
    info = payload["model"]
    model = create_model(info["name"], num_classes=info["num_classes"], **info["kwargs"])
    try:
        shrink(model, payload["state_dict"], payload["shapes"], payload["buffers"])
    except (RuntimeError, KeyError) as error:
        raise storage.CheckpointError(f"{path} does not fit model {info['name']}: {error}") from error
    return model, {k: v for k, v in payload.items() if k not in ("state_dict", "buffers")}
