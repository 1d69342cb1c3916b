"""The seeded training loop: AMP on GPUs, a checkpoint every epoch, resume, DDP; evaluation.

``fit`` is used for dense training and, unchanged, for every retraining round of pruning (LRR
rebuilds the optimizer and schedule, i.e. rewinds the learning rate, by calling it again). Its resume
state is keyed by the recipe, the data (:func:`data_identity`), the starting weights and the code.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from torch import nn

from lib import distributed as dd
from lib import storage
from lib.storage import progress_bar as tqdm
from lib.train.loaders import (Augmented, GlobalBatchSampler, SeededBatches, build_augmentation, default_workers,
                               make_loader)
from lib.train.recipe import Recipe, seed_everything


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
def evaluate(model: nn.Module, dataset, batch_size: int = 256, device=None, num_workers: int | None = None,
             progress: str | None = None) -> float:
    """Top-1 accuracy; under torchrun each rank scores its shard and the counts are summed.
    ``num_workers``: decoding processes (None: :func:`default_workers`, 0 for in-memory data); ``progress``: a label
    to show a progress bar under (on the main process), for sets that take minutes (1,000 ImageNet images on a CPU)."""
    device = device or next(model.parameters()).device
    indices = list(dd.shard(len(dataset)))
    subset = torch.utils.data.Subset(dataset, indices)
    correct = torch.zeros(2, dtype=torch.float64, device=device)
    model.eval()
    workers = default_workers(dataset) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=torch.device(device).type == "cuda")
    for x, y in tqdm(loader, desc=progress, leave=False, disable=progress is None or not dd.is_main()):
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
