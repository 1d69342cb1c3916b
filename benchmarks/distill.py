"""Distillation throughput of EfficientNet-Lite0 on Tiny ImageNet images (a table; no timed tests).

    python benchmarks/distill.py                                   # CPU, ~15 minutes on 2 shared cores
    python benchmarks/distill.py --sizes 128 --threads 2 --skip-choices

(a) Choices, on in-memory batches (no decoding): the student's bare forward + backward + SGD step against the
teacher's cached logits, per resolution (``--sizes``, Tiny ImageNet's 64 px upsampled), thread count
(``--thread-options``) and memory format (channels_last or not); and the teacher's forward alone (the cost of
computing its outputs on the fly, per batch, or once per image and view for the cache).

(b) One epoch of ``--images`` Tiny ImageNet images at ``--size`` px, batch ``--batch``: the repository's recipe
(``lib.train.fit`` with ``recipe.distill``, the student in channels_last as ``lib.prune.schedules`` gives it;
state written after the epoch, validation on ``--val`` ImageNet sample images) with the teacher's outputs cached
(cache already written: what every round after the first costs) and on the fly, against a plain PyTorch loop
doing the same work (DataLoader with shuffle and the same workers, the same loss, SGD, the same validation),
and against its bare forward + backward passes (the batches already decoded). Student and teacher: the
pretrained Lite0 (the pruned student costs the same: masks do not skip work). Medians of interleaved samples
(benchmarks/timing.py); ratios per round.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import compare, ratio  # noqa: E402

from lib.data.datasets import classification_data  # noqa: E402
from lib.distill import distillation_loss, pack  # noqa: E402
from lib.models import create_model, get_spec  # noqa: E402
from lib.train import Recipe, default_workers, fit  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TEMPERATURE = 4.0


def lite0():
    return create_model("efficientnet_lite0", pretrained=True)


def data(size: int, images: int, val: int):
    spec = get_spec("efficientnet_lite0")
    return classification_data({"name": "tiny_imagenet", "root": str(SHARED / "tiny-imagenet-200"), "image_size": size,
                                "test_root": str(SHARED / "imagenet-sample-images"), "limit": images, "n_val": val,
                                "labels": "none"}, spec.mean, spec.std)


def step(student, optimizer, x, targets):
    loss = distillation_loss(student(x), targets, TEMPERATURE)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0)


def choices(args):
    print(f"\n(a) in-memory batches of {args.batch}: images/s of the student's forward+backward+step (teacher "
          "cached) and of the teacher's forward alone")
    print(f"  {'px':>4s} {'threads':>7s} {'layout':>14s} {'fwd+bwd':>8s} {'teacher fwd':>11s} {'fwd+bwd+teacher':>16s}")
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size)
        for threads in args.thread_options:
            torch.set_num_threads(threads)
            for layout in (torch.contiguous_format, torch.channels_last):
                student, teacher = lite0().train().to(memory_format=layout), lite0().eval().to(memory_format=layout)
                optimizer, xl = sgd(student), x.contiguous(memory_format=layout)
                with torch.no_grad():
                    targets = pack(teacher(xl), torch.full((args.batch,), -1))

                def teacher_forward():
                    with torch.no_grad():
                        teacher(xl)

                t = compare({"fwd+bwd": lambda: step(student, optimizer, xl, targets), "teacher": teacher_forward},
                            args.repeats, min_seconds=0)
                fb, tf = args.batch / t["fwd+bwd"].median, args.batch / t["teacher"].median
                name = "channels_last" if layout == torch.channels_last else "contiguous"
                print(f"  {size:4d} {threads:7d} {name:>14s} {fb:8.1f} {tf:11.1f} {1 / (1 / fb + 1 / tf):16.1f}",
                      flush=True)
    torch.set_num_threads(args.threads)


def plain_epoch(student, teacher, train, val, batch, workers, cached):
    """The same work as the recipe's epoch, written plainly: shuffle, teacher outputs (looked up by index from
    ``cached``, or computed), the distillation loss, SGD; then top-1 on ``val``."""
    loader = torch.utils.data.DataLoader(IndexedItems(train), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False)
    optimizer = sgd(student)
    student.train()
    for x, y, index in loader:
        if cached is None:
            with torch.no_grad():
                logits = teacher(x.contiguous(memory_format=torch.channels_last))
        else:
            logits = cached[index]
        step(student, optimizer, x, pack(logits, y))
    student.eval()
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(val, batch_size=256, num_workers=workers):
            student(x).argmax(1).eq(y).sum()


class IndexedItems(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return (*self.dataset[index], index)


def recipe_vs_plain(args):
    d = data(args.size, args.images, args.val)
    train, val = d["train"], d["val"]
    workers = default_workers(train) if args.workers is None else args.workers
    print(f"\n(b) one epoch of {len(train)} Tiny ImageNet images at {args.size} px, batch {args.batch}, {workers} "
          f"loader worker(s), validation on {len(val)} ImageNet sample images; student and teacher in channels_last")
    teacher = lite0().eval().to(memory_format=torch.channels_last)
    initial = lite0().to(memory_format=torch.channels_last)
    base = dict(epochs=1, batch_size=args.batch, lr=0.001, momentum=0.9, weight_decay=0.0, schedule="constant",
                augment=(), num_workers=workers, seed=0)
    cache_root = tempfile.TemporaryDirectory()
    with torch.no_grad():
        cached = torch.cat([teacher(x.contiguous(memory_format=torch.channels_last))
                            for x, _ in torch.utils.data.DataLoader(train, batch_size=64)])
    batches = [(x.contiguous(memory_format=torch.channels_last), pack(cached[i:i + args.batch], y))
               for i, (x, y) in zip(range(0, len(train), args.batch),
                                    torch.utils.data.DataLoader(train, batch_size=args.batch, drop_last=True))]

    def recipe(outputs):
        def run():
            model = copy.deepcopy(initial)
            with tempfile.TemporaryDirectory(dir=cache_root.name) as state:
                fit(model, train, val, Recipe(**base, distill={"temperature": TEMPERATURE, "teacher_outputs": outputs}),
                    Path(cache_root.name) / "run" / Path(state).name, image_size=args.size, progress=False,
                    teacher=teacher)
        return run

    def bare():
        student = copy.deepcopy(initial).train()
        optimizer = sgd(student)
        for x, targets in batches:
            step(student, optimizer, x, targets)

    cases = {
        "recipe, teacher cached": recipe("cached"),
        "plain loop, teacher cached": lambda: plain_epoch(copy.deepcopy(initial), teacher, train, val, args.batch,
                                                          workers, cached),
        "recipe, teacher on the fly": recipe("on_the_fly"),
        "plain loop, teacher on the fly": lambda: plain_epoch(copy.deepcopy(initial), teacher, train, val, args.batch,
                                                              workers, None),
        "bare forward+backward": bare,
    }
    timings = compare(cases, args.train_repeats, min_seconds=0)
    n = len(train) // args.batch * args.batch
    print(f"  {'case':32s} {'images/s':>9s} {'min-max':>13s}")
    for name, t in timings.items():
        print(f"  {name:32s} {n / t.median:9.2f} {n / max(t.wall):6.2f}-{n / min(t.wall):<6.2f}")
    for teacher_outputs in ("cached", "on the fly"):
        med, lo, hi = ratio(timings, f"plain loop, teacher {teacher_outputs}", f"recipe, teacher {teacher_outputs}")
        print(f"  recipe / plain loop, teacher {teacher_outputs}: {med:.3f} (min-max over rounds {lo:.3f}-{hi:.3f})")
    med, lo, hi = ratio(timings, "bare forward+backward", "recipe, teacher cached")
    print(f"  recipe (cached) / bare forward+backward: {med:.3f} (min-max {lo:.3f}-{hi:.3f})")
    cache_root.cleanup()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160], help="(a): resolutions")
    parser.add_argument("--thread-options", type=int, nargs="+", default=[1, 2], help="(a): thread counts")
    parser.add_argument("--size", type=int, default=128, help="(b): resolution")
    parser.add_argument("--threads", type=int, default=2, help="(b): threads")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=128, help="(b): images per epoch")
    parser.add_argument("--val", type=int, default=32, help="(b): validation images")
    parser.add_argument("--workers", type=int, default=None, help="(b): loader workers (default: lib's default)")
    parser.add_argument("--repeats", type=int, default=3, help="(a): interleaved samples")
    parser.add_argument("--train-repeats", type=int, default=3, help="(b): interleaved samples")
    parser.add_argument("--skip-choices", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} threads (b); uptime: {load}")
    if not args.skip_choices:
        choices(args)
    recipe_vs_plain(args)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nuptime at the end: {load}")


if __name__ == "__main__":
    main()
