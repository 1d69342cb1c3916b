"""IMI's tasks (Zimmermann et al. 2023), built for many units at once as index tensors into the pool.

Per unit the pool is sorted by activation. On each side (most and least activating) the first
``n_explanations`` ranks are explanations and the next ``n_queries`` are queries. Task ``t`` shows
``per_task`` explanations of each side, the disjoint, strided ranks ``t, t + n_tasks, ...`` (so every
task's explanations span the whole explanation range), and one query of each side, rank
``n_explanations + floor(t * n_queries / n_tasks)``. With the defaults (180 + 20 per side, 20 tasks of
9 + 9) every explanation and every query is used exactly once, as in IMI.

Ties (e.g. ReLU units that are zero on many images) are broken by a seeded random order, never by
the pool's order: a pool sorted by class would otherwise make ties look like a concept.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch

from lib.params import dataclass_from_params


@dataclass(frozen=True)
class TaskConfig:
    n_explanations: int = 180  # explanation ranks per side
    n_queries: int = 20        # query ranks per side (after the explanations)
    n_tasks: int = 20          # tasks per unit
    per_task: int = 9          # explanations per side shown in one task

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"task count {name} must be a positive integer, got {value!r}")
        if self.n_tasks * self.per_task > self.n_explanations:
            raise ValueError(f"{self.n_tasks} tasks x {self.per_task} explanations need n_explanations >= "
                             f"{self.n_tasks * self.per_task}, got {self.n_explanations}")
        if self.n_tasks > self.n_queries:
            raise ValueError(f"each task needs its own query: n_queries ({self.n_queries}) < n_tasks ({self.n_tasks})")

    @classmethod
    def from_dict(cls, params: dict | None) -> "TaskConfig":
        return dataclass_from_params(cls, params, "task")

    @property
    def per_side(self) -> int:
        return self.n_explanations + self.n_queries

    def fit(self, n_images: int, warn: bool = True) -> "TaskConfig":
        """These counts, scaled down (with a warning) when both sides do not fit disjointly into the pool."""
        if 2 * self.per_side <= n_images:
            return self
        side = n_images // 2
        if side < 2:
            raise ValueError(f"a pool of {n_images} images is too small for any task (it needs at least 4)")
        scale = side / self.per_side
        n_queries = max(1, math.floor(self.n_queries * scale))
        n_explanations = max(1, side - n_queries)
        n_tasks = min(self.n_tasks, n_queries)
        per_task = max(1, min(self.per_task, n_explanations // n_tasks))
        fitted = TaskConfig(n_explanations, n_queries, n_tasks, per_task)
        if warn:
            warnings.warn(f"pool of {n_images} images is smaller than the {2 * self.per_side} the task counts need: "
                          f"scaled to {n_explanations} + {n_queries} per side, {n_tasks} tasks of "
                          f"{per_task} + {per_task} explanations", stacklevel=2)
        return fitted

    def explanation_ranks(self) -> torch.Tensor:
        """(n_tasks, per_task) ranks (0 = most extreme) of the explanations of each task."""
        return torch.arange(self.n_tasks)[:, None] + self.n_tasks * torch.arange(self.per_task)[None, :]

    def query_ranks(self) -> torch.Tensor:
        """(n_tasks,) rank of each task's query."""
        return self.n_explanations + torch.arange(self.n_tasks) * self.n_queries // self.n_tasks


@dataclass
class Tasks:
    """Pool indices of every unit's tasks: explanations (units, tasks, per_task), queries (units, tasks)."""

    positive: torch.Tensor
    negative: torch.Tensor
    query_max: torch.Tensor
    query_min: torch.Tensor

    def __getitem__(self, units) -> "Tasks":
        return Tasks(self.positive[units], self.negative[units], self.query_max[units], self.query_min[units])


def rank_images(activations: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(units, images) pool indices of each unit from most to least activating; ties in seeded random order."""
    n = activations.shape[1]
    shuffle = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    order = torch.argsort(activations[:, shuffle], dim=1, descending=True, stable=True)
    return shuffle[order]


def build_tasks(activations: torch.Tensor, config: TaskConfig, seed: int = 0) -> Tasks:
    """Every unit's IMI tasks from its (units, images) activations; ``config`` must fit the pool."""
    n = activations.shape[1]
    if 2 * config.per_side > n:
        raise ValueError(f"task counts need {2 * config.per_side} images, the pool has {n}: use config.fit({n})")
    ranked = rank_images(activations, seed)
    least_first = ranked.flip(1)  # ties keep a random order on this side too
    explanations, queries = config.explanation_ranks(), config.query_ranks()
    return Tasks(ranked[:, explanations], least_first[:, explanations], ranked[:, queries], least_first[:, queries])
