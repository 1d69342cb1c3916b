"""The Machine Interpretability Score (Zimmermann, Klindt, Brendel, NeurIPS 2024).

For one IMI task a perceptual similarity scores each query by its margin: its similarity to the
positive (most activating) explanations minus its similarity to the negative ones, each pooled
over the task's explanations (``aggregation``: the mean by default). The machine answers the task
right when the max-query's margin exceeds the min-query's; its probability of doing so is
``sigmoid(alpha * (margin(max-query) - margin(min-query)))``. A unit's MIS is the mean of that
probability over its tasks; the plain share of tasks solved (ties count one half) is reported beside it.

With the pool's image-by-image similarity matrix precomputed, scoring is indexing: every unit and
every task at once, no loop over tasks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lib.mis.activations import constant_units
from lib.mis.tasks import TaskConfig, Tasks, build_tasks

AGGREGATIONS = ("mean", "median", "max")
DEFAULT_ALPHA = 16.0


@contextmanager
def single_thread():
    """Run torch on one thread: sorting and indexing tensors this small gains nothing from more threads and
    loses much to their synchronisation (10x on a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class UnitScores:
    """Scores of units (NaN for constant units): mis, solved (units,); delta (units, tasks); their tasks."""

    mis: torch.Tensor
    solved: torch.Tensor
    constant: torch.Tensor
    delta: torch.Tensor
    tasks: Tasks


class MIS:
    """``MIS(similarity)(activations)``: the MIS of every unit, given the pool's similarity matrix.

    similarity: (images, images), higher = more similar (see ``lib.mis.similarity``).
    tasks: the IMI counts; scaled down with a warning when the pool is too small.
    alpha: the sigmoid's scale (fitted to human data in the paper, not public: a parameter here).
    aggregation: how a query's similarities to one side's explanations are pooled (mean, median, max).
    seed: the tie-breaking order of images with equal activations.
    """

    def __init__(self, similarity: torch.Tensor, tasks: TaskConfig | None = None, alpha: float = DEFAULT_ALPHA,
                 aggregation: str = "mean", seed: int = 0, chunk: int = 2048):
        if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
            raise ValueError(f"similarity must be a square (images, images) matrix, got {tuple(similarity.shape)}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
        if not alpha > 0:
            raise ValueError(f"alpha (the sigmoid's scale) must be positive, got {alpha}")
        self.similarity = similarity.float()
        self.tasks = (tasks or TaskConfig()).fit(similarity.shape[0])
        self.alpha, self.aggregation, self.seed, self.chunk = float(alpha), aggregation, seed, chunk

    def __call__(self, activations: torch.Tensor) -> UnitScores:
        """Scores of the units of ``activations`` (units, images)."""
        with single_thread():
            return self.score(self.build_tasks(activations), constant_units(activations))

    def build_tasks(self, activations: torch.Tensor) -> Tasks:
        """The units' tasks; they depend on the activations only, so one set serves every similarity backend."""
        if activations.ndim != 2 or activations.shape[1] != self.similarity.shape[0]:
            raise ValueError(f"activations must be (units, {self.similarity.shape[0]} images), "
                             f"got {tuple(activations.shape)}")
        return build_tasks(activations.float(), self.tasks, self.seed)

    def score(self, tasks: Tasks, constant: torch.Tensor) -> UnitScores:
        """Scores of units given their tasks and which of them are constant (scored NaN)."""
        n_units = len(constant)
        delta = torch.cat([self.deltas(tasks[i:i + self.chunk]) for i in range(0, n_units, self.chunk)]) \
            if n_units else torch.zeros(0, self.tasks.n_tasks)
        delta[constant] = float("nan")
        probability = torch.sigmoid(self.alpha * delta)
        solved = (delta > 0).float() + 0.5 * (delta == 0).float()
        solved[constant] = float("nan")
        return UnitScores(probability.mean(1), solved.mean(1), constant, delta, tasks)

    def deltas(self, tasks: Tasks) -> torch.Tensor:
        """(units, tasks): margin of the max-query minus margin of the min-query."""
        return self.margins(tasks.query_max, tasks) - self.margins(tasks.query_min, tasks)

    def margins(self, queries: torch.Tensor, tasks: Tasks) -> torch.Tensor:
        """(units, tasks): pooled similarity of each query to its positive minus its negative explanations."""
        return self._pool(self.similarity[queries[..., None], tasks.positive]) \
            - self._pool(self.similarity[queries[..., None], tasks.negative])

    def _pool(self, similarities: torch.Tensor) -> torch.Tensor:
        if self.aggregation == "mean":
            return similarities.mean(-1)
        if self.aggregation == "median":
            return similarities.median(-1).values
        return similarities.amax(-1)
