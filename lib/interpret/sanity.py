"""Do the attribution maps depend on the trained weights? The model parameter randomisation test (Adebayo et al.
2018, "Sanity checks for saliency maps"; Quantus's MPRT).

The same images are attributed by the trained network and by the same network with **every layer's weights
re-initialised at once** (the end point of Adebayo et al.'s cascading randomisation: each module with a
``reset_parameters`` re-drawn from its own initialiser, the top layer first, the generator seeded ``seed + 1``
before each, as Quantus's ``MPRT(layer_order="top_down")`` does; :func:`randomised_layers` yields the cascade's
intermediate networks too). Both explain the trained network's predicted class. Per image and attribution:

- ``sanity_<attribution>``: the Spearman rank correlation between the two relevance maps (flattened; Adebayo
  et al.'s measure, Quantus's ``correlation_spearman``). Near 0: the map depends on the weights; near 1: it
  would look the same for any weights, and then it measures the image, not the network;
- ``random_rma_<attribution>``, ``random_rra_<attribution>``: RMA and RRA of the randomised network's maps, the
  floor the trained network's localisation should clear (a map that scores as well without training localises
  the image's statistics, not what the network learnt).

An attribution **fails** at a checkpoint when its mean rank correlation is at least ``threshold`` (0.5 by
default: the maps share more of their ranking with a random network's than they differ in); Adebayo et al. give
no threshold, so the number is the test's and the correlation itself is reported beside the verdict.
"""

from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

THRESHOLD = 0.5


def _resettable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``model`` that own an initialiser, in ``named_modules`` order (as Quantus lists them)."""
    return [(name, module) for name, module in model.named_modules() if hasattr(module, "reset_parameters")]


def randomised_layers(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Cascading randomisation, top layer first: yields (layer name, a copy of ``model`` with that layer and every
    layer above it re-initialised). The copy is the same object throughout (each step randomises one more layer)."""
    randomised = copy.deepcopy(model)
    for name, module in reversed(_resettable(randomised)):
        torch.manual_seed(seed + 1)
        module.reset_parameters()
        yield name, randomised


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's weights re-initialised (the cascade's last network); ``model`` is
    left as it is. Fails when nothing in ``model`` can be re-initialised."""
    randomised = None
    for _, randomised in randomised_layers(model, seed):
        pass
    if randomised is None:
        raise ValueError(f"{type(model).__name__} has no module with reset_parameters: nothing to randomise")
    return randomised.eval()


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps (N, ...) flattened (average ranks for ties; NaN where a map
    is constant)."""
    from scipy.stats import rankdata

    a = np.asarray(a.detach().cpu() if torch.is_tensor(a) else a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b.detach().cpu() if torch.is_tensor(b) else b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes {a.shape} and {b.shape}")
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    norm = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(1) / np.where(norm > 0, norm, 1), np.nan)


def sanity_check(model: nn.Module, make_attributions, inputs: torch.Tensor, truth, batch_size: int = 16,
                 seed: int = 0, trained_maps: dict | None = None, targets: torch.Tensor | None = None) -> pd.DataFrame:
    """The randomisation test of one network on ``inputs`` (a row per image): ``sanity_<name>``,
    ``random_rma_<name>`` and ``random_rra_<name>`` for every attribution ``make_attributions(model)`` builds (a
    list of ``lib.interpret.methods`` attributions; called for the randomised network, and for the trained one
    unless its maps are given). ``truth``: the images' ``GroundTruth``. ``trained_maps`` ({name: (N, H, W)
    relevance maps at the masks' size}) and ``targets`` (the trained network's predicted classes): the trained
    network's maps where the caller has them already (RQ1's own pass), so only the randomised network is
    attributed."""
    from lib.interpret.methods import Attributor
    from lib.interpret.metrics import RelevanceMassAccuracy, RelevanceRankAccuracy, relevance_map

    device = next(model.parameters()).device
    randomised = randomise(model, seed).to(device)
    random_attributions = make_attributions(randomised)
    random = Attributor(random_attributions)
    trained = Attributor(make_attributions(model)) if trained_maps is None else None
    pooling = {m.name: m.pooling for m in random_attributions}
    size = tuple(truth.masks.shape[-2:])
    columns: dict[str, list] = {}
    for lo in range(0, len(inputs), batch_size):
        hi = min(lo + batch_size, len(inputs))  # the trained maps may cover more images than are checked
        x, part = inputs[lo:hi].to(device), truth[lo:hi]
        if trained is None:
            target = torch.as_tensor(targets[lo:hi]).to(device)
            mine = {name: torch.as_tensor(np.asarray(maps[lo:hi])) for name, maps in trained_maps.items()}
        else:
            target, raw = trained.attribute(x)
            mine = {name: relevance_map(raw[name], pooling[name], size=size) for name in raw}
        _, random_maps = random.attribute(x, target)
        for name in random_maps:
            other = relevance_map(random_maps[name], pooling[name], size=size)
            columns.setdefault(f"sanity_{name}", []).append(rank_correlation(mine[name], other))
            columns.setdefault(f"random_rma_{name}", []).append(RelevanceMassAccuracy()(other, part).cpu().numpy())
            columns.setdefault(f"random_rra_{name}", []).append(RelevanceRankAccuracy()(other, part).cpu().numpy())
    return pd.DataFrame({k: np.concatenate(v).astype(float) for k, v in columns.items()})


def verdicts(rows, attributions, threshold: float = THRESHOLD) -> dict[str, dict]:
    """Per attribution, over the checkpoints' rows (``sanity_<name>`` means): the largest mean rank correlation,
    and whether the attribution passes (below ``threshold`` at every checkpoint)."""
    out = {}
    for name in attributions:
        values = [r[f"sanity_{name}"] for r in rows if r.get(f"sanity_{name}") is not None
                  and not np.isnan(r[f"sanity_{name}"])]
        if values:
            out[name] = {"max_rank_correlation": float(max(values)), "passed": bool(max(values) < threshold),
                         "threshold": float(threshold)}
    return out
