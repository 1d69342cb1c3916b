"""Unsupervised single-object discovery on patch features: LOST and TokenCut.

Both take the patch features of a batch of images, ``feats`` (B, N, d) with N = h * w patches in
row-major order, and the grid ``(h, w)``; both return one :class:`Discovery` per image whose box is
in patch units ``[x0, y0, x1, y1)`` (:func:`grid_box_to_pixels` maps it to the image).

LOST (Simeoni et al., BMVC 2021; valeoai/LOST ``object_discovery.py``):
  A = F F^T; a patch's degree is its number of positive correlations with the other patches; the
  seed is the patch of lowest degree; the k lowest-degree patches that correlate positively with
  the seed (the seed included) vote, M = sum of their rows of A; the box encloses the 4-connected
  component of {M > 0} that contains the seed.
  *Ties:* the reference sorts degrees with ``torch.argsort`` (order among equal degrees unspecified);
  here the sort is stable, so ties go to the lower patch index and results are reproducible.
  *No object:* when all features are zero (a dead, heavily pruned map) no patch correlates
  positively and the reference raises; here the image gets no box (it counts as a miss).

TokenCut (Wang et al., CVPR 2022; YangtaoWANG95/TokenCut ``object_discovery.py``):
  patch features L2-normalised; graph weights 1 where cosine similarity > tau, eps elsewhere (or
  the similarity itself with ``binary_graph=False``); the second-smallest generalized eigenvector of
  (D - W) x = lambda D x (batched ``torch.linalg.eigh`` of D^-1/2 (D - W) D^-1/2 on ``device``, equal to
  ``scipy.linalg.eigh``'s, :meth:`TokenCut.fiedler_vector`, up to sign) split at its mean; the side holding the patch of
  largest |x| (the seed) is the foreground; the box encloses the connected component of the
  foreground that contains the seed (the reference's choice of the principal object).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F


@dataclass
class Discovery:
    """One image's discovered object: its box on the patch grid ``[x0, y0, x1, y1)`` (None: none found),
    the seed patch, the component the box encloses, and algorithm-specific details."""

    seed: int
    box: tuple[int, int, int, int] | None
    component: np.ndarray
    details: dict = field(default_factory=dict, repr=False)


def seed_component(mask: np.ndarray, seed: int) -> tuple[tuple[int, int, int, int] | None, np.ndarray]:
    """The 4-connected component of ``mask`` (h, w) that holds patch ``seed`` (row-major index) and its box.

    Returns (None, empty mask) when the seed is not in ``mask``.
    """
    labels, _ = scipy.ndimage.label(mask)
    label = labels.flat[seed]
    if label == 0:
        return None, np.zeros_like(mask, dtype=bool)
    component = labels == label
    rows, cols = np.nonzero(component)
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1), component


def grid_box_to_pixels(box, grid: tuple[int, int], input_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """A patch-grid box in pixels of the network input: times the stride (input size / grid, per axis),
    clipped to the image inside the (padded) input. Sizes are (height, width)."""
    scale_y, scale_x = input_size[0] / grid[0], input_size[1] / grid[1]
    x0, y0, x1, y1 = box
    return np.array([x0 * scale_x, y0 * scale_y, min(x1 * scale_x, image_size[1]), min(y1 * scale_y, image_size[0])],
                    dtype=np.float32)


def _check(feats: torch.Tensor, grid) -> torch.Tensor:
    feats = torch.as_tensor(feats)
    if feats.ndim == 2:
        feats = feats[None]
    if feats.ndim != 3 or feats.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"features must be (B, h*w, d) for the grid {tuple(grid)}, got {tuple(feats.shape)}")
    return feats


class LOST:
    """LOST's seed, seed expansion and box extraction. ``k_patches``: how many lowest-degree patches may vote
    (100 in the paper; capped at the number of patches)."""

    name = "lost"

    def __init__(self, k_patches: int = 100, device: str | torch.device | None = None):
        if int(k_patches) < 1:
            raise ValueError(f"k_patches must be at least 1, got {k_patches}")
        self.k_patches, self.device = int(k_patches), device

    @torch.no_grad()
    def __call__(self, feats, grid: tuple[int, int]) -> list[Discovery]:
        feats = _check(feats, grid).float()
        feats = feats.to(self.device) if self.device is not None else feats
        n = feats.shape[1]
        affinity = feats @ feats.transpose(1, 2)  # (B, N, N)
        positive = affinity > 0
        positive.diagonal(dim1=1, dim2=2).fill_(False)
        degree = positive.sum(-1)
        order = torch.sort(degree, dim=1, stable=True).indices
        seeds = order[:, 0]
        potentials = order[:, :min(self.k_patches, n)]
        seed_rows = affinity[torch.arange(len(feats)), seeds]  # (B, N)
        is_similar = seed_rows.gather(1, potentials) > 0
        voters = torch.zeros_like(seed_rows).scatter_(1, potentials, is_similar.float())
        votes = (voters[:, None, :] @ affinity)[:, 0]  # sum of the voters' rows of A
        degree, potentials, is_similar, votes = degree.cpu(), potentials.cpu(), is_similar.cpu(), votes.cpu()
        seeds = seeds.cpu()
        out = []
        for b in range(len(feats)):
            seed = int(seeds[b])
            box, component = seed_component(votes[b].reshape(grid).numpy() > 0, seed)
            out.append(Discovery(seed, box, component, {
                "degree": degree[b].numpy(), "potentials": potentials[b].numpy(),
                "similars": potentials[b][is_similar[b]].numpy(), "votes": votes[b].reshape(grid).numpy()}))
        return out


class TokenCut:
    """TokenCut's normalized cut. ``tau``: similarity threshold of an edge (0.2 in the paper); ``eps``: the
    weight of the other pairs (1e-5); ``binary_graph=False`` keeps similarities above tau as weights."""

    name = "tokencut"

    def __init__(self, tau: float = 0.2, eps: float = 1e-5, binary_graph: bool = True,
                 device: str | torch.device | None = None):
        if not -1 <= tau < 1:
            raise ValueError(f"tau is a cosine-similarity threshold in [-1, 1), got {tau}")
        if eps <= 0:
            raise ValueError(f"eps must be positive (it keeps the graph connected), got {eps}")
        self.tau, self.eps, self.binary_graph, self.device = float(tau), float(eps), binary_graph, device

    def fiedler_vectors(self, feats: torch.Tensor) -> torch.Tensor:
        """The batch's Fiedler vectors (B, N), float64, in torch on ``device`` (the features' own by default):
        the generalized problem (D - W) x = lambda D x as the symmetric one D^-1/2 (D - W) D^-1/2 y = lambda y
        (``torch.linalg.eigh``, batched), x = D^-1/2 y (so x^T D x = 1, as scipy normalises it). The sign of
        an eigenvector is arbitrary in either solver; :meth:`bipartition` does not depend on it."""
        feats = torch.as_tensor(feats)
        feats = feats.to(self.device) if self.device is not None else feats
        feats = F.normalize(feats.float(), p=2, dim=-1)
        similarity = (feats @ feats.transpose(-1, -2)).double()
        if self.binary_graph:
            weights = torch.where(similarity > self.tau, 1.0, self.eps).to(torch.float64)
        else:
            weights = torch.where(similarity < self.tau, torch.full_like(similarity, self.eps), similarity)
        degree = weights.sum(-1)
        scale = degree.rsqrt()
        laplacian = torch.diag_embed(degree) - weights
        _, vectors = torch.linalg.eigh(scale[..., :, None] * laplacian * scale[..., None, :])
        return scale * vectors[..., 1]

    def graph(self, feats: torch.Tensor) -> np.ndarray:
        """Edge weights between the patches of one image (N, d), or of each image of a batch (B, N, d)."""
        feats = F.normalize(torch.as_tensor(feats).float(), p=2, dim=-1)
        similarity = (feats @ feats.transpose(-1, -2)).numpy()
        if self.binary_graph:
            return np.where(similarity > self.tau, 1.0, self.eps)
        return np.where(similarity < self.tau, self.eps, similarity).astype(np.float64)

    def fiedler_vector(self, weights: np.ndarray) -> np.ndarray:
        """Second-smallest generalized eigenvector of (D - W) x = lambda D x."""
        degree = np.diag(weights.sum(1))
        _, vectors = scipy.linalg.eigh(degree - weights, degree, subset_by_index=[1, 2])
        return vectors[:, 0]

    @staticmethod
    def bipartition(vector: np.ndarray) -> tuple[np.ndarray, int]:
        """Split at the mean; the foreground is the side of the patch with the largest |value| (the seed)."""
        seed = int(np.argmax(np.abs(vector)))
        foreground = vector > vector.mean()
        if not foreground[seed]:
            foreground = ~foreground
        return foreground, seed

    @torch.no_grad()
    def __call__(self, feats, grid: tuple[int, int]) -> list[Discovery]:
        feats = _check(feats, grid)
        if feats.shape[1] < 3:
            raise ValueError(f"TokenCut needs at least 3 patches, got {feats.shape[1]}")
        out = []
        for vector in self.fiedler_vectors(feats).cpu().numpy():
            foreground, seed = self.bipartition(vector)
            box, component = seed_component(foreground.reshape(grid), seed)
            out.append(Discovery(seed, box, component, {"eigenvector": vector.reshape(grid),
                                                        "foreground": foreground.reshape(grid)}))
        return out


ALGORITHMS = {"lost": LOST, "tokencut": TokenCut}


def build_algorithms(config: dict[str, dict]) -> dict:
    """``{"lost": {"k_patches": 100}, "tokencut": {"tau": 0.2}}`` -> the algorithm objects, by name."""
    unknown = sorted(set(config) - set(ALGORITHMS))
    if unknown or not config:
        raise ValueError(f"unknown discovery algorithm(s) {unknown}; choose from {sorted(ALGORITHMS)}")
    return {name: ALGORITHMS[name](**(kwargs or {})) for name, kwargs in config.items()}
