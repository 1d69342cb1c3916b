"""Scores of attribution maps: localisation against ground-truth masks, and faithfulness to the model.

Relevance maps (:func:`relevance_map`), as Study A builds them: pixel attributions (Integrated Gradients
in SmoothGrad, Saliency, Guided Grad-CAM) are pooled over the colour channels as the **sum of squares**
(the CLEVR-XAI "l2-norm,sq" pooling); map attributions (Grad-CAM, attention) are upsampled bilinearly to the
image and **min-max normalised**. Every map is non-negative and at the mask's resolution.

Localisation, per image (each a small class: ``metric(relevance, truth) -> (N,)``):

- :class:`RelevanceMassAccuracy` (RMA, Arras et al. 2022): relevance inside the mask / total relevance;
- :class:`RelevanceRankAccuracy` (RRA): share of the K most relevant pixels inside the mask, K = mask size;
- :class:`PointingGame` (Zhang et al. 2018): the map's maximum lies within ``tolerance`` pixels of the mask;
- :class:`GiniSparseness` (Hurley & Rickard 2009; Chalasani et al. 2020): 0 for a flat map, 1 - 1/n for one pixel.

Ties are scored in expectation over a random tie-break (RRA at the K-th value, pointing game among equal
maxima), so a constant map scores exactly what the uniform map should: RMA = RRA = the mask's share of the
image, the pointing game the share of pixels within tolerance of the mask. A map with no relevance at all
(all zeros: a dead network) likewise scores as the uniform map. :func:`uniform_scores` gives that baseline.

Faithfulness (Petsiuk et al. 2018, RISE): :class:`DeletionAUC` replaces pixels, most relevant first, by
the deletion substrate (zero in the normalised input: the mean colour, also IG's baseline) and
:class:`InsertionAUC` inserts them into a blurred copy (or the mean colour); each is the area under the predicted-class
probability against the fraction of pixels changed (``steps`` equal steps). Low deletion and high
insertion AUC mean a faithful map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (H, W) map of an (N, H, W) batch to [0, 1]; a constant map becomes all ones."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.ones_like(flat))
    return out.view_as(maps)


def relevance_map(attributions: torch.Tensor, pooling: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Raw attributions -> non-negative (N, H, W) relevance at ``size`` (default: the attributions' own).

    pooling "square": (N, C, H, W) pixel attributions, summed squares over C. pooling "cam": an (N, h, w)
    map, upsampled bilinearly then min-max normalised (the order does not matter: min-max is invariant to
    the affine rescaling that bilinear upsampling commutes with).
    """
    attributions = attributions.detach().float()
    if pooling == "square":
        if attributions.ndim != 4:
            raise ValueError(f"pixel attributions must be (N, C, H, W), got shape {tuple(attributions.shape)}")
        maps = attributions.pow(2).sum(1)
    elif pooling == "cam":
        if attributions.ndim != 3:
            raise ValueError(f"map attributions must be (N, h, w), got shape {tuple(attributions.shape)}")
        maps = attributions
    else:
        raise ValueError(f"pooling must be 'square' or 'cam', got {pooling!r}")
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return minmax(maps) if pooling == "cam" else maps


@dataclass
class GroundTruth:
    """Binary object masks (N, H, W) and what the metrics derive from them once (not per checkpoint).

    near: pixels within ``tolerance`` (Euclidean, in pixels) of the mask, for the pointing game.
    """

    masks: torch.Tensor
    tolerance: float = 15.0
    near: torch.Tensor | None = None

    def __post_init__(self):
        self.masks = (self.masks if torch.is_tensor(self.masks) else torch.from_numpy(np.asarray(self.masks))).bool()
        if self.masks.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {tuple(self.masks.shape)}")
        empty = (~self.masks.flatten(1).any(1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"images {empty} have empty ground-truth masks: the scores are undefined there; "
                             "drop those images (the loaders in lib.data.masks do)")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {self.tolerance}")
        if self.near is None:
            from scipy.ndimage import distance_transform_edt

            distance = np.stack([distance_transform_edt(~m) for m in self.masks.cpu().numpy()])
            self.near = torch.from_numpy(distance <= self.tolerance)

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, index) -> "GroundTruth":
        return GroundTruth(self.masks[index], self.tolerance, self.near[index])

    @property
    def share(self) -> torch.Tensor:
        """The mask's share of the image: RMA and RRA of a uniform map."""
        return self.masks.flatten(1).double().mean(1)


def _check(relevance: torch.Tensor, truth: GroundTruth) -> torch.Tensor:
    if tuple(relevance.shape) != tuple(truth.masks.shape):
        raise ValueError(f"relevance {tuple(relevance.shape)} and masks {tuple(truth.masks.shape)} differ in shape; "
                         "make maps with relevance_map(..., size=mask size)")
    if (relevance < 0).any():
        raise ValueError("relevance must be non-negative: pool raw attributions with relevance_map first")
    return relevance.detach().double().cpu().flatten(1)


class RelevanceMassAccuracy:
    """RMA = sum of relevance inside the mask / total relevance."""

    name = "rma"

    def __call__(self, relevance: torch.Tensor, truth: GroundTruth) -> torch.Tensor:
        r, m = _check(relevance, truth), truth.masks.cpu().flatten(1)
        total, inside = r.sum(1), (r * m).sum(1)
        return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), truth.share)


class RelevanceRankAccuracy:
    """RRA = |top-K relevant pixels inside the mask| / K with K = mask size; ties at the K-th value shared out."""

    name = "rra"

    def __call__(self, relevance: torch.Tensor, truth: GroundTruth) -> torch.Tensor:
        r, masks = _check(relevance, truth), truth.masks.cpu().flatten(1)
        out = []
        for values, mask in zip(r, masks):
            k = int(mask.sum())
            kth = torch.topk(values, k).values[-1]
            above, tied = values > kth, values == kth
            from_ties = (k - int(above.sum())) * (tied & mask).sum() / tied.sum()
            out.append(((above & mask).sum() + from_ties) / k)
        return torch.stack(out).double()


class PointingGame:
    """Hit (1) when the map's maximum lies within the tolerance of the mask; equal maxima share the hit."""

    name = "pointing"

    def __call__(self, relevance: torch.Tensor, truth: GroundTruth) -> torch.Tensor:
        r, near = _check(relevance, truth), truth.near.cpu().flatten(1)
        top = r == r.max(1, keepdim=True).values
        return (top & near).sum(1).double() / top.sum(1)


class GiniSparseness:
    """Gini index of the map: 1 - 2 sum_k (c_k / |c|_1) (n - k + 1/2) / n over values sorted ascending."""

    name = "gini"

    def __call__(self, relevance: torch.Tensor, truth: GroundTruth | None = None) -> torch.Tensor:
        r = _check(relevance, truth) if truth is not None else relevance.detach().double().cpu().flatten(1)
        c = r.sort(1).values
        n = c.shape[1]
        total = c.sum(1, keepdim=True)
        weights = (n - torch.arange(1, n + 1, dtype=c.dtype) + 0.5) / n
        gini = 1 - 2 * (c / torch.where(total > 0, total, 1.0) * weights).sum(1)
        return torch.where(total[:, 0] > 0, gini, torch.zeros_like(gini))


LOCALISATION = (RelevanceMassAccuracy, RelevanceRankAccuracy, PointingGame, GiniSparseness)


def uniform_scores(truth: GroundTruth) -> dict[str, torch.Tensor]:
    """Every localisation score of a uniform (constant) map, per image: the chance level of each metric."""
    flat = torch.ones(truth.masks.shape, dtype=torch.float64)
    return {metric.name: metric(flat, truth) for metric in (cls() for cls in LOCALISATION)}


class _PerturbationAUC:
    """Shared machinery: perturb pixels in decreasing order of relevance, score the target's probability."""

    name = ""

    def __init__(self, steps: int = 16, batch_size: int = 64, blur_sigma: float = 5.0):
        if steps < 1 or batch_size < 1 or blur_sigma < 0:
            raise ValueError(f"need steps >= 1, batch_size >= 1, blur_sigma >= 0; "
                             f"got {steps}, {batch_size}, {blur_sigma}")
        self.steps, self.batch_size, self.blur_sigma = int(steps), int(batch_size), float(blur_sigma)

    def endpoints(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image with no pixel changed, image with every pixel changed)."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, model, inputs: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        if tuple(relevance.shape) != (inputs.shape[0], *inputs.shape[2:]):
            raise ValueError(f"relevance {tuple(relevance.shape)} must be (N, H, W) at the input resolution "
                             f"{tuple(inputs.shape[2:])}")
        n_images, pixels = inputs.shape[0], inputs.shape[2] * inputs.shape[3]
        order = torch.argsort(relevance.flatten(1).to(inputs.device), dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(pixels, device=order.device).expand_as(order))
        counts = torch.round(torch.linspace(0, 1, self.steps + 1) * pixels).long().to(inputs.device)
        start, end = self.endpoints(inputs)
        probs = torch.empty(n_images * (self.steps + 1), device=inputs.device)
        for lo in range(0, len(probs), self.batch_size):
            index = torch.arange(lo, min(lo + self.batch_size, len(probs)), device=inputs.device)
            image, step = index // (self.steps + 1), index % (self.steps + 1)
            changed = (rank[image] < counts[step][:, None]).view(len(index), 1, *inputs.shape[2:])
            batch = torch.where(changed, end[image], start[image])
            probs[index] = model(batch).softmax(1).gather(1, target[image][:, None])[:, 0].float()
        curves = probs.view(n_images, self.steps + 1).double().cpu()
        return torch.trapezoid(curves, (counts.double() / pixels).cpu(), dim=1)


class DeletionAUC(_PerturbationAUC):
    """Area under the probability curve as the most relevant pixels are zeroed (the mean colour): lower is better."""

    name = "deletion"

    def endpoints(self, inputs):
        return inputs, torch.zeros_like(inputs)


class InsertionAUC(_PerturbationAUC):
    """Area under the probability curve as the most relevant pixels are put into a blurred copy: higher is better.

    ``blur_sigma`` = 0 starts from the deletion substrate (the mean colour) instead: where colour alone
    carries the class, as in the embedded dataset, a blurred copy keeps the class and the curve stays flat.
    """

    name = "insertion"

    def endpoints(self, inputs):
        from torchvision.transforms.v2.functional import gaussian_blur

        if self.blur_sigma == 0:
            return torch.zeros_like(inputs), inputs
        radius = min(math.ceil(3 * self.blur_sigma), min(inputs.shape[2:]) // 2 - 1)
        blurred = gaussian_blur(inputs, kernel_size=[2 * radius + 1] * 2, sigma=[self.blur_sigma] * 2)
        return blurred, inputs


FAITHFULNESS = (DeletionAUC, InsertionAUC)
