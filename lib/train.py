"""The seeded training loop: recipe as parameters, AMP on GPUs, a checkpoint every epoch, resume, DDP.

``fit`` is used for dense training and, unchanged, for every retraining round of pruning (LRR
rebuilds the optimizer and schedule, i.e. rewinds the learning rate, by calling it again).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from lib.storage import progress_bar as tqdm

from lib import distributed as dd
from lib import storage
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


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def build_scheduler(optimizer, recipe: Recipe, steps_per_epoch: int):
    """Per-step schedule (so short runs still anneal smoothly); with ``schedule_interval`` "epoch" the learning
    rate changes only at epoch boundaries (``torch.optim.lr_scheduler.ExponentialLR`` stepped once per epoch, as
    Study B's code does), the warm-up still ramps per step. Stepped once per batch either way."""
    total, warmup = recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch
    S = torch.optim.lr_scheduler
    if recipe.schedule_interval == "epoch":
        epochs = max(1, recipe.epochs - recipe.warmup_epochs)
        factors = {
            "cosine": lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs)),
            "step": lambda e: recipe.gamma ** (e // recipe.step_size),
            "exponential": lambda e: recipe.gamma ** e,
            "constant": lambda e: 1.0,
        }[recipe.schedule]
        main = S.LambdaLR(optimizer, lambda step: factors(step // steps_per_epoch))
    elif recipe.schedule == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    elif recipe.schedule == "step":
        main = S.StepLR(optimizer, step_size=recipe.step_size * steps_per_epoch, gamma=recipe.gamma)
    elif recipe.schedule == "exponential":
        main = S.LambdaLR(optimizer, lambda step: recipe.gamma ** (step / steps_per_epoch))
    else:
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = S.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
    return S.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int = 256, device=None, progress: bool = False) -> torch.Tensor:
    """Logits for every item of ``dataset`` (in order), computed on this process."""
    device = device or next(model.parameters()).device
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = [model(x.to(device)).float().cpu() for x, _ in tqdm(loader, desc="predict", leave=False, disable=not progress)]
    return torch.cat(out)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 256, device=None, num_workers: int | None = None) -> float:
    """Top-1 accuracy; under torchrun each rank scores its shard and the counts are summed.
    ``num_workers``: decoding processes (None: :func:`default_workers`, 0 for in-memory data)."""
    device = device or next(model.parameters()).device
    indices = list(dd.shard(len(dataset)))
    subset = torch.utils.data.Subset(dataset, indices)
    correct = torch.zeros(2, dtype=torch.float64, device=device)
    model.eval()
    workers = default_workers(dataset) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=torch.device(device).type == "cuda")
    for x, y in loader:
        correct[0] += (model(x.to(device)).argmax(1) == y.to(device)).sum()
        correct[1] += len(y)
    dd.all_reduce_sum(correct)
    return float(correct[0] / correct[1])


AUX_WEIGHT = 0.3  # weight of auxiliary classifiers' losses (GoogLeNet, Szegedy et al. 2015)


def _logits_and_loss(outputs, y, criterion, aux_weight: float = AUX_WEIGHT):
    """Models with auxiliary heads (torchvision GoogLeNet, Inception) return (logits, *aux) when training:
    loss = main + aux_weight x each auxiliary loss (Study B's code: main + 0.3 aux1 + 0.3 aux2)."""
    if isinstance(outputs, tuple):
        logits, aux = outputs[0], [a for a in outputs[1:] if a is not None]
        return logits, criterion(logits, y) + aux_weight * sum(criterion(a, y) for a in aux)
    return outputs, criterion(outputs, y)


def _fingerprint(model: nn.Module, recipe: Recipe, extra: dict | None) -> str:
    """Identity of a run: resuming is only allowed into the same recipe, data, starting weights (whole tensors)
    and code (this module's import closure, :func:`lib.imports.code_digest`)."""
    from lib.imports import code_digest

    h = hashlib.sha256(json.dumps([recipe.identity(), extra or {}, code_digest([__name__])], sort_keys=True,
                                  default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fit(model: nn.Module, train_set, val_set, recipe: Recipe, state_dir: str | Path, *, image_size: int,
        live_dir: str | Path | None = None, run_info: dict | None = None, progress: bool = True,
        teacher: nn.Module | None = None) -> dict:
    """Train ``model`` in place and return the history.

    After every epoch the full state (weights, optimizer, schedule, RNGs, history) is written
    atomically to ``state_dir/last.pt``; a call that finds a state of the same run resumes after
    its last finished epoch. Under torchrun the model is wrapped in DistributedDataParallel; each rank
    loads its share of every global batch (:class:`GlobalBatchSampler`, what DistributedSampler does, but
    with the same global batches as one process).

    Input pipeline: ``recipe.num_workers`` DataLoader workers (:func:`make_loader`); every item's
    augmentation is seeded by (seed, epoch, index) (:class:`Augmented`), so the batches do not depend on the
    number of workers. On CUDA: pinned memory, non-blocking copies, bf16 autocast (``recipe.amp``) and, for
    4-d inputs, channels_last (``recipe.channels_last``). ``recipe.compile``: train a ``torch.compile``d model.
    ``recipe.distill``: retrain towards ``teacher`` (``lib.distill``; its cached outputs in ``state_dir/..``).
    """
    state_path = Path(state_dir) / "last.pt"
    device = dd.default_device()
    model.to(device)
    if recipe.distill is not None and teacher is not None:  # resume only into a run with the same teacher
        from lib.distill import weights_id

        run_info = {**(run_info or {}), "teacher": weights_id(teacher)}
    fingerprint = _fingerprint(model, recipe, run_info)
    seed_everything(recipe.seed)

    augmentation, distiller = build_augmentation(recipe.augment, image_size), None
    if recipe.distill is not None:  # the teacher's outputs become the targets
        from lib.distill import Distiller

        distiller = Distiller(recipe, teacher, Path(state_dir).parent / "teacher_outputs", device)
        train_set, augmentation = distiller.wrap(train_set, augmentation)
    train_data = Augmented(train_set, augmentation)
    sampler = SeededBatches(GlobalBatchSampler(len(train_data), recipe.batch_size, recipe.seed, dd.rank(),
                                               dd.world_size()), recipe.seed)
    loader = make_loader(train_data, device, recipe.num_workers, recipe.prefetch_factor, recipe.seed,
                         batch_sampler=sampler)
    layout = torch.channels_last if recipe.channels_last and device.type == "cuda" else None
    if layout is not None:
        model.to(memory_format=layout)
    net = nn.parallel.DistributedDataParallel(model) if dd.is_distributed() else model
    if recipe.compile:
        net = torch.compile(net)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, len(loader))
    use_amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = distiller or nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    history, start_epoch = [], 0

    if state_path.is_file():
        state = storage.load_torch(state_path, map_location=device)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"]["torch"])
            history, start_epoch = state["history"], state["epoch"]
            if dd.is_main():
                storage.notice(f"resuming {state_path} after epoch {start_epoch}/{recipe.epochs}")
        elif dd.is_main():
            storage.notice(f"ignoring {state_path}: it belongs to another run (recipe, data or weights changed); "
                      "training from the start")

    live = None
    if live_dir is not None and dd.is_main():
        from dvclive import Live

        live = Live(dir=str(live_dir), resume=start_epoch > 0, save_dvc_exp=False, dvcyaml=None, report=None)

    epochs = tqdm(range(start_epoch, recipe.epochs), desc="epochs", disable=not (progress and dd.is_main()),
                  initial=start_epoch, total=recipe.epochs)
    for epoch in epochs:
        sampler.set_epoch(epoch)
        net.train()
        if distiller is not None:
            distiller.train_mode(model)
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        for x, y in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not (progress and dd.is_main())):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if layout is not None and x.ndim == 4:
                x = x.contiguous(memory_format=layout)
            if distiller is not None:
                y = distiller.targets(x, y)
            with torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32, enabled=use_amp):
                logits, loss = _logits_and_loss(net(x), y, criterion, recipe.aux_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            hits = distiller.agreement(logits, y) if distiller is not None else (logits.argmax(1) == y).sum()
            totals += torch.stack([loss.detach().double() * len(y), hits.double(),
                                   torch.tensor(len(y), dtype=torch.float64, device=device)])
        dd.all_reduce_sum(totals)
        record = {"epoch": epoch + 1, "train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
                  "val_acc": evaluate(model, val_set), "lr": optimizer.param_groups[0]["lr"]}
        history.append(record)
        epochs.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record['val_acc']:.3f}")
        if live is not None:
            for key in ("train_loss", "train_acc", "val_acc", "lr"):
                live.log_metric(key, record[key])
            live.next_step()
        if dd.is_main():
            storage.save_torch(state_path, {
                "fingerprint": fingerprint, "epoch": epoch + 1, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state()},
            })
        dd.barrier()
    if live is not None:
        live.end()
    model.eval()
    return {"history": history, "recipe": recipe.identity()}


def train_classifier(model_name: str, data_dir: str | Path, recipe: Recipe, out_dir: str | Path,
                     model_kwargs: dict | None = None, dataset: dict | None = None, pretrained: dict | None = None,
                     progress: bool = True, arch: str | None = None) -> dict:
    """Train a registered model; write ``model.pt`` and DVCLive logs to ``out_dir``.

    Data: the embedded dataset in ``data_dir``, or ``dataset`` (the prune stage's dataset dict, e.g.
    ``{"name": "imagenet", "root": ..., "num_classes": 1000, ...}``, see ``lib.prune.runs``).
    ``pretrained``: start from a local weights file instead of a random initialisation,
    ``{"weights": path, "drop_keys": [...], "recorded_acc": 0.6978}`` (the pruning presets' pretrained
    models, ``lib.models.pretrained``); with ``recipe.epochs`` 0 the model is taken as it is and
    only evaluated (Study B prunes torchvision's ImageNet GoogLeNet), otherwise it is fine-tuned.
    ``arch``: the pipeline's name of the architecture (``cnn``), stored in the checkpoint so that a later stage
    given another ``arch`` refuses it (:func:`lib.models.registry.check_arch`).
    Everything is validated (model name, recipe, data, weights) before the first training step. The training
    state lives in ``out_dir/state`` until the run has finished, so an interrupted run resumes.
    """
    import shutil

    from lib.data import shapes
    from lib.data.datasets import check_training_data, classification_data
    from lib.models import get_spec, load_pretrained, save_checkpoint

    out_dir = Path(out_dir)
    spec = get_spec(model_name)
    pretrained = dict(pretrained or {})
    check_pretrained(pretrained)
    if recipe.epochs == 0 and not has_weights(pretrained, model_kwargs):
        raise ValueError("epochs 0 trains nothing: give pretrained weights, or at least one epoch")
    check_training_data(dataset, recipe.epochs)
    if dataset:
        dataset = dict(dataset)
        if "num_classes" not in dataset:
            raise ValueError(f"dataset {dataset.get('name')!r} needs num_classes (e.g. 1000 for ImageNet)")
        num_classes = int(dataset.pop("num_classes"))
    else:
        dataset = {"name": "shapes", "root": str(data_dir)}
        num_classes = len(shapes.load_meta(data_dir)["classes"])
    data = classification_data(dataset, spec.mean, spec.std)
    seed_everything(recipe.seed)
    source = {"model": model_name, "num_classes": num_classes, "model_kwargs": model_kwargs or {}, **pretrained}
    model = load_pretrained(source)
    if recipe.epochs:
        history = fit(model, data["train"], data["val"], recipe, out_dir / "state", image_size=data["image_size"],
                      live_dir=out_dir / "dvclive", progress=progress,
                      run_info={"model": model_name, "kwargs": model_kwargs, "data": data_identity(data),
                                **({"pretrained": pretrained} if pretrained else {})})["history"]
    else:  # the pretrained model as it is: its evaluation is the whole learning curve (epoch 0)
        model.to(dd.default_device())
        history = [{"epoch": 0, "val_acc": evaluate(model, data["val"]),  # evaluation-only data: no train split
                    "train_acc": evaluate(model, data["train"]) if len(data["train"]) else None}]
        log_history(out_dir / "dvclive", history)
    test_acc = evaluate(model, data["test"])
    if dd.is_main():
        save_checkpoint(out_dir / "model.pt", model, model_name, num_classes, model_kwargs, recipe=recipe.identity(),
                        test_acc=test_acc, **({"arch": arch} if arch else {}), **({"weights": str(pretrained["weights"]),
                                               "recorded_acc": pretrained.get("recorded_acc")} if pretrained else {}))
        shutil.rmtree(out_dir / "state", ignore_errors=True)
    dd.barrier()
    return {"model": model_name, "params": sum(p.numel() for p in model.parameters()), "test_acc": test_acc,
            "val_acc": history[-1]["val_acc"], "epochs": recipe.epochs, "history": history,
            **({"recorded_acc": pretrained.get("recorded_acc")} if pretrained else {})}


def has_weights(pretrained: dict | None, model_kwargs: dict | None = None) -> bool:
    """Whether the model starts from trained weights: a local file (``pretrained``) or the weights a model's
    package ships (``model_kwargs: {pretrained: true}``, e.g. ``efficientnet_lite0``)."""
    return bool(pretrained) or bool((model_kwargs or {}).get("pretrained"))


def check_stage(p: dict) -> list[tuple]:
    """The train stage's parameters, checked before any compute; returns the input paths it reads."""
    import torch

    from lib.data.datasets import check_dataset, check_training_data, dataset_paths
    from lib.models import create_model

    recipe = Recipe.from_dict(with_seed(p["recipe"], p["seed"], "recipe"))
    if recipe.distill is not None:
        raise ValueError("train.recipe.distill: distillation retrains a pruned model towards the dense one, so it "
                         "belongs in the retraining recipe (retrain.<arch>.recipe); remove it from train")
    check_training_data(p["dataset"], recipe.epochs)
    check_pretrained(p["pretrained"], exists=False)
    if recipe.epochs == 0 and not has_weights(p["pretrained"], p["model_kwargs"]):
        raise ValueError("recipe.epochs 0 trains nothing: give pretrained weights (pretrained.weights, or "
                         "model_kwargs {pretrained: true} for a model that ships its own), or at least one epoch")
    dataset = dict(p["dataset"] or {})
    num_classes = dataset.pop("num_classes", None)
    if dataset and num_classes is None:
        raise ValueError(f"dataset {dataset.get('name')!r} needs num_classes (e.g. 1000 for ImageNet)")
    with torch.device("meta"):  # the architecture is built, no memory is touched
        # the architecture only: weights a package ships (model_kwargs pretrained) are loaded when the stage runs
        create_model(p["model"], num_classes=num_classes or 10,
                     **{k: v for k, v in (p["model_kwargs"] or {}).items() if k != "pretrained"})
    needed = []
    if dataset:
        check_dataset(dataset, exists=False)
        needed += dataset_paths(dataset)
    else:
        needed.append(("data_dir", p["data_dir"], "shapes"))
    if p["pretrained"]:
        needed.append(("pretrained.weights", p["pretrained"]["weights"], "weights"))
    return needed


def data_identity(data: dict):
    """What a resume key holds about the data: its content, not its path.

    The embedded dataset (``data["id"]`` a folder with ``meta.json``): its fingerprint (a hash of its files,
    stored at generation, :func:`lib.data.shapes.fingerprint`), so regenerating it at the same path with another
    seed invalidates every training state and pruning step made from it, and moving it does not. ``data`` may
    carry a ``fingerprint`` itself; other datasets: their id (name, root and options) as before.
    """
    if data.get("fingerprint"):
        return {"fingerprint": data["fingerprint"]}
    data_id = data.get("id")
    if isinstance(data_id, (str, Path)) and (Path(data_id) / "meta.json").is_file():
        from lib.data import shapes

        return {"fingerprint": shapes.fingerprint(data_id)}
    return data_id


def check_pretrained(pretrained: dict | None, exists: bool = True) -> None:
    """``pretrained`` of :func:`train_classifier`: empty, or 'weights' (a local file that ``exists``) and
    optionally 'drop_keys' and 'recorded_acc' (a pretrained source, ``lib.models.pretrained``, whose model,
    class count and kwargs are the stage's own parameters)."""
    pretrained = pretrained or {}
    unknown = set(pretrained) - {"weights", "drop_keys", "recorded_acc"}
    if unknown or (pretrained and not pretrained.get("weights")):
        raise ValueError(f"pretrained takes 'weights' (a local file) and optionally 'drop_keys', 'recorded_acc'; "
                         f"got {sorted(pretrained)}")
    if exists and pretrained and not Path(pretrained["weights"]).is_file():
        raise FileNotFoundError(f"pretrained weights file {pretrained['weights']} does not exist")


def log_history(live_dir: str | Path, history: list[dict]) -> None:
    """Write ``history`` (one dict of metrics per epoch) as DVCLive metrics, as ``fit`` logs them."""
    if not dd.is_main():
        return
    from dvclive import Live

    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
    for record in history:
        for key, value in record.items():
            if key != "epoch" and value is not None:  # None: not measured (no training split)
                live.log_metric(key, value)
        live.next_step()
    live.end()
