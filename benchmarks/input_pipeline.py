"""Input pipeline and training throughput on ImageNet-style JPEGs (a table; no timed tests).

    python benchmarks/input_pipeline.py                          # CPU, a few minutes on 2 cores
    python benchmarks/input_pipeline.py --device cuda --images 2048 --batch 128 --workers 0 4 8 --train-workers 8

(a) Decoding + augmentation (``lib.data.imagenet.ImageFiles`` with the training transform: RandomResizedCrop
to 224 px and a flip), through ``lib.train.make_loader`` with each of ``--workers`` worker counts: images per
second. (b) Training throughput of a randomly initialised torchvision ResNet-18 at 224 px, one epoch over the
same images: the repository's loop (``lib.train.fit``: seeded per-item augmentation, the recipe's loader,
checkpoint state written after the epoch, validation on ``--val`` images) against a minimal loop in the
style of torchvision's reference script (DataLoader with shuffle, SGD, cross-entropy, evaluation after the
epoch; the same workers, device, autocast and memory format), from the same initial weights; the ratio (goal >= 0.95).

The JPEGs are generated (``lib.data.fake_imagenet``, 300-500 px a side) into ``--root`` (a temporary folder
by default). Medians of interleaved samples with their spread (benchmarks/timing.py).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import compare, ratio  # noqa: E402

from lib.data import fake_imagenet, imagenet  # noqa: E402
from lib.train import Recipe, fit, make_loader  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference_epoch(model, dataset, val, batch_size, workers, device, amp):
    """One epoch as torchvision's references/classification/train.py trains (its essentials), then its
    evaluation on ``val`` (as the reference evaluates after every epoch)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model.to(device, memory_format=layout).train()
    for x, y in loader:
        x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        for x, y in torch.utils.data.DataLoader(val, batch_size=batch_size, num_workers=workers):
            model(x.to(device, non_blocking=True).contiguous(memory_format=layout)).argmax(1).eq(y.to(device)).sum()
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="where the JPEGs are (generated there if missing)")
    parser.add_argument("--images", type=int, default=96, help="training images (10 classes)")
    parser.add_argument("--val", type=int, default=10, help="validation images of lib's loop")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="(a): worker counts")
    parser.add_argument("--train-workers", type=int, default=None, help="(b): workers (default: lib's default)")
    parser.add_argument("--train-images", type=int, default=32, help="(b): images per epoch")
    parser.add_argument("--train-repeats", type=int, default=2, help="(b): interleaved samples per loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    temporary = tempfile.TemporaryDirectory() if args.root is None else None
    root = Path(args.root or temporary.name)
    per_class = max(1, args.images // 10)
    fake_imagenet.write(root, classes=10, per_class=per_class, splits=("train",))
    fake_imagenet.write(root, classes=10, per_class=max(1, args.val // 10), splits=("val",), seed=1)
    found = imagenet.scan(root, "train")
    train = imagenet.ImageFiles(found["files"], found["labels"], MEAN, STD, image_size=224, augment=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {device}; "
          f"{len(train)} JPEGs of 300-500 px in {root}; medians of {args.repeats} interleaved samples")

    print("\n(a) decode + RandomResizedCrop(224) + flip + normalise, batches of", args.batch)
    loaders = {w: make_loader(train, device, w, batch_size=args.batch, shuffle=True) for w in args.workers}
    for loader in loaders.values():
        next(iter(loader))  # start the persistent workers outside the timing
    timings = compare({f"{w} workers": (lambda lo=loader: [b for b in lo]) for w, loader in loaders.items()},
                      args.repeats, min_seconds=0)
    print(f"  {'workers':>8s} {'images/s':>9s} {'min-max':>15s} {'vs 0 workers':>13s}")
    for w in args.workers:
        t = timings[f"{w} workers"]
        speed = ratio(timings, f"{args.workers[0]} workers", f"{w} workers")[0]
        print(f"  {w:8d} {len(train) / t.median:9.1f} {len(train) / max(t.wall):7.1f}-{len(train) / min(t.wall):<7.1f} "
              f"{speed:12.2f}x")
    del loaders

    if args.skip_training:
        return
    print(f"\n(b) ResNet-18 (torchvision, random init), 224 px, batch {args.batch}, one epoch of "
          f"{args.train_images} images")
    import torchvision

    torch.manual_seed(0)
    initial = torchvision.models.resnet18(num_classes=10)
    subset = torch.utils.data.Subset(train, list(range(min(args.train_images, len(train)))))
    subset.decodes_files = True
    val_found = imagenet.scan(root, "val")
    val = imagenet.ImageFiles(val_found["files"][:args.val], val_found["labels"][:args.val], MEAN, STD, image_size=224)
    workers = args.train_workers
    recipe = Recipe(epochs=1, batch_size=args.batch, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="constant",
                    augment=(), num_workers=workers, seed=0)
    from lib.distributed import default_device

    if default_device() != device:
        print(f"  note: lib.train.fit runs on {default_device()} (lib.distributed.default_device), the reference on {device}")

    def lib_epoch():
        model = copy.deepcopy(initial)
        with tempfile.TemporaryDirectory() as state:
            fit(model, subset, val, recipe, state, image_size=224, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def reference():
        from lib.train import default_workers

        reference_epoch(copy.deepcopy(initial), subset, val, args.batch,
                        default_workers(subset) if workers is None else workers, device, recipe.amp)

    timings = compare({"lib.train.fit": lib_epoch, "reference loop": reference}, args.train_repeats, min_seconds=0)
    steps = len(subset) // args.batch * args.batch
    for name, t in timings.items():
        print(f"  {name:16s} {steps / t.median:8.2f} images/s (min-max {steps / max(t.wall):.2f}-{steps / min(t.wall):.2f})")
    med, lo, hi = ratio(timings, "reference loop", "lib.train.fit")
    print(f"  throughput of lib.train.fit / reference: {med:.2f} (min-max over rounds {lo:.2f}-{hi:.2f}; "
          f"both validate on {len(val)} images; lib also writes its state)")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
