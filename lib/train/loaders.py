"""The input pipeline of training: seeded per-item augmentation, global batches dealt out across ranks, loaders.

Every item's augmentation is drawn from (run seed, epoch, index) only, so the batches do not depend on the
number of DataLoader workers or of ranks.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def default_workers(dataset=None) -> int:
    """DataLoader workers for ``dataset``: ``min(8, cpus - 1)`` (0 on one core) when its items are decoded
    from files (``ImageFiles``: decoding and augmenting is the work to overlap with training), 0 for
    in-memory tensors (a worker would only add copying between processes)."""
    if dataset is not None and not _decodes_files(dataset):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus - 1))


def _decodes_files(dataset) -> bool:
    while dataset is not None:
        if getattr(dataset, "decodes_files", False):
            return True
        dataset = getattr(dataset, "dataset", None)  # Augmented, Subset
    return False


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one training item's augmentation: a function of the run's seed, the epoch and the index only."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**63


def _worker_init(worker_id: int) -> None:
    """numpy and random in a worker, seeded from the worker's torch seed (the loader's generator + worker id)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset, device: torch.device | str = "cpu", num_workers: int | None = None,
                prefetch_factor: int = 2, seed: int = 0, **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader as the field builds one: ``num_workers`` worker processes (None: :func:`default_workers`),
    persistent across epochs, ``prefetch_factor`` batches ahead each, pinned memory when the device is CUDA,
    and a seeded generator and worker_init_fn (the loader never draws from the global RNG). ``kwargs``: the
    DataLoader's (batch_size, batch_sampler, shuffle, ...)."""
    workers = default_workers(dataset) if num_workers is None else int(num_workers)
    extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor,
             "worker_init_fn": _worker_init} if workers else {}
    return torch.utils.data.DataLoader(dataset, num_workers=workers, pin_memory=torch.device(device).type == "cuda",
                                       generator=torch.Generator().manual_seed(seed), **extra, **kwargs)


def build_augmentation(names, image_size: int):
    from torchvision.transforms import v2

    ops = []
    if "resized_crop" in names:
        ops.append(v2.RandomResizedCrop(image_size, antialias=True))
    if "crop" in names:
        ops.append(v2.RandomCrop(image_size, padding=image_size // 16, padding_mode="reflect"))
    if "flip" in names:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops) if ops else None


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Batches of a seeded per-epoch permutation, each global batch dealt out across the ranks.

    One process and N torchrun ranks see the same global batches (rank r takes items r, r+N, ... of
    each), so DDP's averaged gradient equals the single-process one: results agree up to numerical
    tolerance (exactly, for models without batch statistics and without random augmentation).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of ranks {world_size}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        size = min(self.batch_size, self.n)
        for b in range(len(self)):
            yield order[b * size:(b + 1) * size][self.rank::self.world].tolist()


class SeededBatches(torch.utils.data.Sampler):
    """A batch sampler's batches as ``(index, seed)`` keys, the seed :func:`item_seed` of (run seed, epoch, index)."""

    def __init__(self, batches: GlobalBatchSampler, seed: int):
        self.batches, self.seed = batches, seed

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        epoch = self.batches.epoch
        for batch in self.batches:
            yield [(index, item_seed(self.seed, epoch, index)) for index in batch]


class Augmented(torch.utils.data.Dataset):
    """Applies a per-sample transform to the image of (image, label) items.

    Indexed by ``(index, seed)`` (:class:`SeededBatches`), the item (the dataset's own random transform, if
    any, and ``transform``) is drawn from the global torch RNG seeded with ``seed`` and restored afterwards:
    an item's augmentation depends on the run's seed, the epoch and its index only, so any number of
    DataLoader workers (and any number of ranks) gives the same batches as the main process alone.
    """

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._item(index)
        return self._item(key)

    def _item(self, index):
        image, label = self.dataset[index]
        return (self.transform(image) if self.transform else image), label
