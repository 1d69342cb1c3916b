"""Study B's three pruners, one class each, with one call: ``method.prune(model, params, target)``.

- :class:`Unstructured`: single weights;
- :class:`Filters` (structured): whole output channels (filters of a convolution, rows of a
  linear layer);
- :class:`Connections` (connection sparsity): whole input channels (``weight[:, j]``).

``target`` is the share of the prunable weights (``params``) that is removed afterwards, the
weights removed before included (masks only ever grow). Selection is by L1 norm (``"l1"``) or at
random (``"random"``, the control), over all layers at once (``scope="global"``) or layer by layer
(``"layer"``). Per layer the requested share is met exactly (to the nearest weight or channel);
globally, structured methods meet it to within half a channel of the largest layer. Globally,
channels of different layers are compared by their *mean* absolute weight (L1 norm / channel
size), since a filter of a wide layer has a larger L1 norm only because it has more weights;
within a layer this is the same ranking as the L1 norm (as ``torch.nn.utils.prune.ln_structured``).

Structured methods never remove the last channel of a layer, so the network stays connected.
:class:`Filters` removes a filter together with its bias and the batch-norm channel that
normalises it (found by tracing one forward pass), so the removed channel's output is exactly
zero and compaction (``lib.prune.compaction``) can take it out without changing the function;
``companions=False`` masks the filter's weights only (``torch.nn.utils.prune.ln_structured``, Study B's code:
the batch norm's shift still passes a constant).

Options that reproduce Study B's code (``lib.prune.schedules.PruningPlan`` exposes them):

- ``persistent=False`` ("regrowing"): the selected weights are multiplied by zero once and no mask is kept,
  so retraining lets them grow back (Study B's headline connection-sparsity runs); the default keeps a mask
  (the weights stay zero through retraining).
- ``rounding="floor"``: per layer, ``int(rate x channels)`` channels (Study B's connection sparsity) instead of
  the nearest whole number (``round``, as ``torch.nn.utils.prune`` counts).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from lib.registry import Registry
from lib.prune.masks import Prunable, apply_masks, as_prunable, get_mask, remove_smallest

SELECTIONS = ("l1", "random")
SCOPES = ("global", "layer")
ROUNDINGS = ("nearest", "floor")


class Pruner:
    name: str = ""

    def __init__(self, selection: str = "l1", scope: str = "global", seed: int = 0, persistent: bool = True,
                 rounding: str = "nearest", companions: bool = True):
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; choose one of {SCOPES}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {ROUNDINGS}")
        self.selection, self.scope, self.seed = selection, scope, seed
        self.persistent, self.rounding, self.with_companions = persistent, rounding, companions

    def __repr__(self):
        return (f"{type(self).__name__}(selection={self.selection!r}, scope={self.scope!r}, seed={self.seed}, "
                f"persistent={self.persistent}, rounding={self.rounding!r}, companions={self.with_companions})")

    def _count(self, share: float, n: int) -> int:
        """How many of ``n`` items a per-layer ``share`` removes."""
        return int(share * n) if self.rounding == "floor" else round(share * n)  # floor: int(), as Study B

    @torch.no_grad()
    def prune(self, model: nn.Module, params, target: float, example_input: torch.Tensor | None = None) -> None:
        """Mask ``model`` in place until ``target`` of the weights in ``params`` are removed."""
        if not 0 <= target < 1:
            raise ValueError(f"target sparsity must be in [0, 1), got {target}")
        params = [as_prunable(p) for p in params]
        generator = torch.Generator().manual_seed(self.seed)
        keeps = self.select(params, target, generator)
        masks = {p.key: keep for p, keep in zip(params, keeps)}
        if self.with_companions:
            masks.update(self.companions(model, params, keeps, example_input))
        if self.persistent:
            apply_masks(model, masks)
        else:
            zero_once(model, masks)

    def select(self, params: list[Prunable], target: float, generator) -> list[torch.Tensor]:
        raise NotImplementedError

    def companions(self, model, params, keeps, example_input) -> dict[str, torch.Tensor]:
        """Masks of tensors removed along with the selected weights (none by default)."""
        return {}

    def _scores(self, values: torch.Tensor, generator) -> torch.Tensor:
        if self.selection == "random":
            return torch.rand(values.shape, generator=generator).to(values.device)
        return values


class Unstructured(Pruner):
    """Single weights with the smallest magnitude (or random ones)."""

    name = "unstructured"

    def select(self, params, target, generator):
        keeps = [get_mask(p.module, p.param).clone() for p in params]
        scores = [self._scores(p.weight.detach().abs(), generator) for p in params]
        if self.scope == "layer":
            for keep, score in zip(keeps, scores):
                remove_smallest(keep.view(-1), score.reshape(-1), self._count(target, keep.numel()))
            return keeps
        flat_keep = torch.cat([k.reshape(-1) for k in keeps])
        remove_smallest(flat_keep, torch.cat([s.reshape(-1) for s in scores]), round(target * flat_keep.numel()))
        return [part.view_as(k) for part, k in zip(flat_keep.split([k.numel() for k in keeps]), keeps)]


@torch.no_grad()
def zero_once(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Multiply each named tensor by its keep-mask once, attaching no mask: retraining may regrow the weights."""
    modules = dict(model.named_modules())
    for key, keep in masks.items():
        name, _, param = key.rpartition(".")
        module = modules[name]
        if parametrize.is_parametrized(module, param):
            tensor = module.parametrizations[param].original
        else:
            tensor = getattr(module, param)
        tensor.mul_(keep.to(device=tensor.device, dtype=tensor.dtype))


class _Channels(Pruner):
    """Whole slices along ``dim`` of every prunable weight (0: filters, 1: input channels)."""

    dim = 0

    def _groups(self, p: Prunable):
        """The weight and its keep-mask as (channels, weights per channel) matrices."""
        weight = p.weight.detach().movedim(self.dim, 0)
        keep = get_mask(p.module, p.param).movedim(self.dim, 0).clone()
        return weight.reshape(weight.shape[0], -1), keep.reshape(keep.shape[0], -1)

    def select(self, params, target, generator):
        biases = [p.key for p in params if p.is_bias]
        if biases:
            raise ValueError(f"{self.name} prunes whole channels of weights; biases ({biases[:3]}...) are not "
                             "prunable on their own (filters remove a filter's bias with it)")
        groups = [self._groups(p) for p in params]
        scores = [self._scores(w.abs().mean(1), generator) for w, _ in groups]
        alive = [k.any(1) for _, k in groups]
        if self.scope == "layer":
            removed = []
            for (w, _), a, s in zip(groups, alive, scores):
                n = min(self._count(target, len(a)), len(a) - 1) - int((~a).sum())
                removed.append(_lowest(s, a & ~_top(s, a), n))
        else:
            removed = self._select_global(groups, alive, scores, target)
        keeps = []
        for p, (_, keep), gone in zip(params, groups, removed):
            keep[gone] = False
            shape = p.weight.movedim(self.dim, 0).shape
            keeps.append(keep.view(shape).movedim(0, self.dim).contiguous())
        return keeps

    @staticmethod
    def _select_global(groups, alive, scores, target):
        """Lowest scores first, until the removed weights are as close as they get to the target."""
        total = sum(k.numel() for _, k in groups)
        masked = sum(int((~k).sum()) for _, k in groups)
        layer, index, score, cost = [], [], [], []
        for i, ((_, keep), a, s) in enumerate(zip(groups, alive, scores)):
            eligible = (a & ~_top(s, a)).nonzero().squeeze(1)  # the best remaining channel of a layer stays
            layer += [i] * len(eligible)
            index.append(eligible)
            score.append(s[eligible].float())
            cost.append(keep.sum(1)[eligible])
        removed = [torch.zeros(len(a), dtype=torch.bool) for a in alive]
        if not layer:
            return removed
        layer, index, score, cost = torch.tensor(layer), torch.cat(index), torch.cat(score), torch.cat(cost)
        order = torch.sort(score, stable=True).indices
        reached = masked + torch.cat([torch.zeros(1, dtype=torch.long), cost[order].cumsum(0)])
        n = int((reached - round(target * total)).abs().argmin())  # how many of the ordered channels to take
        for j in order[:n]:
            removed[layer[j]][index[j]] = True
        return removed


def _top(score: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """One-hot of the highest-scoring alive channel (kept so that no layer is cut off entirely)."""
    top = torch.zeros_like(alive)
    if alive.any():
        top[torch.where(alive, score.float(), torch.tensor(float("-inf"))).argmax()] = True
    return top


def _lowest(score: torch.Tensor, eligible: torch.Tensor, n: int) -> torch.Tensor:
    chosen = torch.zeros_like(eligible)
    idx = eligible.nonzero().squeeze(1)
    if n > 0 and len(idx):
        chosen[idx[torch.topk(score[idx].float(), min(n, len(idx)), largest=False).indices]] = True
    return chosen


class Filters(_Channels):
    """Structured pruning: whole filters (output channels), with their bias and batch-norm channel."""

    name = "filters"
    dim = 0

    def companions(self, model, params, keeps, example_input):
        if example_input is None:
            raise ValueError("filter pruning traces one forward pass to find each filter's batch-norm channel: "
                             "pass example_input (e.g. torch.zeros(2, 3, image_size, image_size))")
        norms = following_norms(model, [p.module for p in params], example_input)
        masks = {}
        for p, keep in zip(params, keeps):
            alive = keep.reshape(keep.shape[0], -1).any(1)
            prefix = f"{p.name}." if p.name else ""
            bias = "in_proj_bias" if isinstance(p.module, nn.MultiheadAttention) else "bias"
            if getattr(p.module, bias, None) is not None:
                masks[prefix + bias] = alive & get_mask(p.module, bias)
            norm_name = norms.get(p.name)
            if norm_name is not None:
                norm = model.get_submodule(norm_name)
                for param in ("weight", "bias"):
                    if getattr(norm, param, None) is not None:
                        masks[f"{norm_name}.{param}"] = alive & get_mask(norm, param)
        return masks


class Connections(_Channels):
    """Connection sparsity: whole input channels of a layer (``weight[:, j]``)."""

    name = "connections"
    dim = 1


PRUNERS = Registry("pruner", {cls.name: cls for cls in (Unstructured, Filters, Connections)})


def register_pruner(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: add a :class:`Pruner` subclass to :data:`PRUNERS` under its ``name``, so that
    a plan's ``pruner`` (params.yaml ``prune.<plan>.plan.pruner``) accepts it."""
    return PRUNERS.add_class(cls, Pruner)


def get_pruner(name: str, selection: str = "l1", scope: str = "global", seed: int = 0, **options) -> Pruner:
    """``options``: ``persistent``, ``rounding``, ``companions`` (see :class:`Pruner`)."""
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; choose one of {sorted(PRUNERS)}")
    return PRUNERS[name](selection=selection, scope=scope, seed=seed, **options)


NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def following_norms(model: nn.Module, layers: list[nn.Module], example_input: torch.Tensor) -> dict[str, str]:
    """{layer name: name of the batch norm that receives exactly that layer's output}.

    Traced in training mode (so training-only branches, e.g. GoogLeNet's auxiliary heads, are
    seen); the model's buffers and the random state are left as they were.
    """
    from lib.prune.graph import trace

    names = {m: n for n, m in model.named_modules()}
    records = trace(model, example_input, (*NORM_TYPES, *{type(m) for m in layers}))
    produced = {}
    for module, inputs, output in records:
        if module in layers:
            produced[id(output)] = names[module]
    out = {}
    for module, inputs, output in records:
        if isinstance(module, NORM_TYPES) and inputs and id(inputs[0]) in produced:
            out.setdefault(produced[id(inputs[0])], names[module])
    return out
