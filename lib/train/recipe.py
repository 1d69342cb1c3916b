"""A training run's recipe (the parameters of ``fit``) and its seed.

``Recipe`` holds every field that decides a training result (optimizer, schedule, augmentation, seed, ...) and
the execution fields that do not (workers, memory layout, compilation); ``with_seed`` gives a recipe's or a
plan's fields the run's seed (params.yaml ``seeds``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lib.params import check_fields, dataclass_from_params


@dataclass(frozen=True)
class Recipe:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"          # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"        # cosine | step | exponential | constant
    step_size: int = 30             # step: decay every step_size epochs
    gamma: float = 0.1              # step and exponential: decay factor (exponential: per epoch)
    schedule_interval: str = "step"  # step: the LR moves at every batch (smoothly); epoch: once per epoch (Study B)
    warmup_epochs: int = 0          # linear warm-up (ViTs)
    augment: tuple = ("flip", "crop")   # flip | crop | resized_crop
    label_smoothing: float = 0.0
    aux_weight: float = 0.3         # weight of each auxiliary head's loss (GoogLeNet with aux_logits)
    amp: bool = True                # mixed precision (bf16 autocast), used only on CUDA
    seed: int = 0
    distill: dict | None = None     # retraining by distillation from the dense model: lib.distill.Distillation's fields
    # How the work is done, not what is computed (left out of a run's identity, see ``identity``):
    num_workers: int | None = None  # DataLoader worker processes; None: default_workers() for the data
    prefetch_factor: int = 2        # batches each worker prepares ahead
    channels_last: bool = True      # CNN weights and inputs in channels_last, used only on CUDA
    compile: bool = False           # torch.compile the model for training

    EXECUTION = ("num_workers", "prefetch_factor", "channels_last", "compile")

    def __post_init__(self):
        check_fields(self, "training")  # types first: `epochs: three` names the field, not a TypeError
        checks = {
            "epochs": self.epochs >= 0, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1, "weight_decay": self.weight_decay >= 0,
            "step_size": self.step_size >= 1, "gamma": self.gamma > 0, "seed": self.seed >= 0,
            "optimizer": self.optimizer in ("sgd", "adamw"),
            "schedule": self.schedule in ("cosine", "step", "exponential", "constant"),
            "schedule_interval": self.schedule_interval in ("step", "epoch"),
            "aux_weight": self.aux_weight >= 0,
            "augment": set(self.augment) <= {"flip", "crop", "resized_crop"},
            "warmup_epochs": self.warmup_epochs == 0 or 0 < self.warmup_epochs < self.epochs,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "num_workers": self.num_workers is None or self.num_workers >= 0,
            "prefetch_factor": self.prefetch_factor >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training recipe field(s) {bad} "
                             f"({', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}): {self}")
        if self.distill is not None:
            from lib.distill import check

            check(self)

    @classmethod
    def from_dict(cls, params: dict) -> "Recipe":
        return dataclass_from_params(cls, params, "training", tuple_fields=("augment",))

    def identity(self) -> dict:
        """The fields that decide the result: every field but the execution ones (workers, prefetching,
        memory layout, compilation), so that changing those neither invalidates a saved state nor a checkpoint."""
        return {k: v for k, v in asdict(self).items() if k not in self.EXECUTION}



def with_seed(params: dict, seed: int, what: str) -> dict:
    """``params`` (a recipe's or a plan's fields) with the run's ``seed``, the stage's matrix seed (params.yaml
    ``seeds``: one network per seed, its initialisation, data order, retraining and random pruning all drawn from
    it). A seed of their own that differs is refused: it would make the same network under every seed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (an entry of params.yaml `seeds`), got {seed!r}")
    own = (params or {}).get("seed", seed)
    if own != seed:
        raise ValueError(f"{what}.seed is {own!r} but the run's seed is {seed}: the seed comes from params.yaml "
                         f"`seeds` (one run per seed); remove {what}.seed")
    return {**(params or {}), "seed": seed}


def seed_everything(seed: int) -> None:
    """Seed every generator and ask for deterministic kernels (exactly reproducible on CPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
