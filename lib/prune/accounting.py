"""Accounting of a pruned checkpoint: parameters, zeros, removed channels and multiply-accumulates.

MACs here are the multiply-accumulates of the weight layers (convolutions, linear layers and the
projections of attention) for one input image at inference: what pruning can reduce. Per layer,
``macs`` counts every weight and ``nonzero_macs`` only the weights left (what a sparse kernel
would do); the compacted model's MACs are those of the smaller dense model that
``lib.prune.compaction.compact`` builds (what a dense kernel does after compaction).
"""

from __future__ import annotations

import torch
from torch import nn

from lib.prune.masks import as_prunable, sparsity_report


def _weight_uses(module: nn.Module, inputs, output, batch: int) -> list[tuple[str, torch.Tensor, float]]:
    """(suffix, weight, uses per image) of the weights a call of ``module`` multiplies with."""
    if isinstance(module, nn.Conv2d):
        return [("", module.weight, output.shape[-1] * output.shape[-2] * output.shape[0] / batch)]
    if isinstance(module, nn.Linear):
        return [("", module.weight, inputs[0].numel() / module.in_features / batch)]
    if isinstance(module, nn.MultiheadAttention):
        tokens = inputs[0].numel() / module.embed_dim / batch
        return [("", module.in_proj_weight, tokens), (".out_proj", module.out_proj.weight, tokens)]
    if "ShiftedWindowAttention" in type(module).__name__:  # torchvision Swin: qkv/proj are used functionally
        tokens = inputs[0].numel() / inputs[0].shape[-1] / batch
        return [(".qkv", module.qkv.weight, tokens), (".proj", module.proj.weight, tokens)]
    return []


@torch.no_grad()
def layer_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, dict]:
    """{layer: {"macs", "nonzero_macs"}} per input image, from one forward pass in eval mode."""
    names = {m: n for n, m in model.named_modules()}
    out: dict[str, dict] = {}
    batch = example_input.shape[0]

    def hook(module, inputs, output):
        for suffix, weight, uses in _weight_uses(module, inputs, output if isinstance(output, torch.Tensor) else output[0], batch):
            entry = out.setdefault(names[module] + suffix, {"macs": 0, "nonzero_macs": 0})
            entry["macs"] += int(round(uses * weight.numel()))
            entry["nonzero_macs"] += int(round(uses * int((weight != 0).sum())))

    kinds = (nn.Conv2d, nn.Linear, nn.MultiheadAttention)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, kinds) or "ShiftedWindowAttention" in type(m).__name__]
    was_training = model.training
    try:
        model.eval()(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return out


def removed_channels(weight: torch.Tensor) -> dict:
    """How many output channels (filters) and input channels (connections) of a weight are all zero."""
    w = weight.detach()
    if w.dim() < 2:
        return {"filters_removed": 0, "connections_removed": 0}
    filters = int((w.reshape(w.shape[0], -1) == 0).all(1).sum())
    connections = int((w.movedim(1, 0).reshape(w.shape[1], -1) == 0).all(1).sum())
    return {"filters_removed": filters, "connections_removed": connections}


def accounting(model: nn.Module, params, example_input: torch.Tensor, compact: bool = True) -> dict:
    """Everything about a pruned model's size: see the module docstring. ``params``: the prunable layers.

    Keys: ``sparsity`` (of the prunable weights), ``params``/``zeros`` (all parameters),
    ``prunable_params``/``prunable_zeros``, ``macs``/``nonzero_macs`` (dense and sparse MACs of the
    model as it is), ``compacted_params``/``compacted_macs``/``removed_share`` (after compaction;
    None with ``compaction_error`` when compaction is not possible), and ``per_layer``.
    """
    from lib.prune.compaction import CompactionError
    from lib.prune.compaction import compact as compact_model

    params = [as_prunable(p) for p in params]
    report = sparsity_report(model, params)
    macs = layer_macs(model, example_input)
    for p in params:
        entry = report["per_layer"][p.label]
        entry.update(removed_channels(p.weight))
        entry.update(macs.get(p.label, {"macs": 0, "nonzero_macs": 0}))
    report["macs"] = sum(m["macs"] for m in macs.values())
    report["nonzero_macs"] = sum(m["nonzero_macs"] for m in macs.values())
    report["zero_share"] = report["zeros"] / report["params"]
    report.update(compacted_params=None, compacted_macs=None, removed_share=None, compaction_error=None)
    emptied = any(v["filters_removed"] or v["connections_removed"] for v in report["per_layer"].values())
    if compact and not emptied:  # no prunable layer lost a whole channel: compaction cannot remove anything
        report.update(compacted_params=report["params"], compacted_macs=report["macs"], removed_share=0.0)
    elif compact:
        try:
            smaller = compact_model(model, example_input)
        except CompactionError as error:
            report["compaction_error"] = str(error)
        else:
            report["compacted_params"] = sum(p.numel() for p in smaller.parameters())
            report["compacted_macs"] = sum(m["macs"] for m in layer_macs(smaller, example_input).values())
            report["removed_share"] = 1 - report["compacted_params"] / report["params"]
    return report
