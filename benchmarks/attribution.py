"""Cost of the attribution methods, counted in forward+backward passes.

    python benchmarks/attribution.py                 # small_cnn and small_vit at 64 px, 16 images per call
    python benchmarks/attribution.py --models efficientnet_lite0 --size 160 --batch 8 --internal-batch-size 32

For each model and method: seconds per image (one call on a batch of ``--batch`` images), that divided by
the time of ONE forward+backward pass of the model at the same batch size (gradient w.r.t. the input,
parameters frozen, as the methods run it), and the method's nominal pass count (Integrated Gradients in
SmoothGrad: steps x samples). Both wall-clock and process CPU time are measured (on a shared machine the
CPU-time ratio is the stable one). Then: the shared pass (every cheap method of the family in one
Attributor call) against the same methods one by one, and one call on the whole batch against one image
per call, with the largest relative difference between the two sets of maps. Times are the minimum over
``--repeats`` runs. CNNs run in channels_last, as the stage runs them (``--nchw`` to compare).
"""

from __future__ import annotations

import argparse
import time

import torch

from lib.attribution.methods import DEFAULT_METHODS, Attributor, create_method
from lib.models import create_model, get_spec


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def timed(fn):
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def one_pass(model, x):
    """One forward pass and one backward pass (to the input) of the whole batch."""
    inputs = x.detach().requires_grad_(True)
    torch.autograd.grad(model(inputs).max(1).values.sum(), inputs)


def build(name: str, size: int, channels_last: bool):
    spec = get_spec(name)
    kwargs = {"pretrained": True} if name == "efficientnet_lite0" else {"img_size": size} if name == "small_vit" else {}
    model = create_model(name, num_classes=1000 if name == "efficientnet_lite0" else 10, **kwargs).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layout = torch.channels_last if channels_last and spec.family == "cnn" else torch.contiguous_format
    return model.to(memory_format=layout), spec, layout


def largest_difference(together: dict, alone: list[dict]) -> float:
    """Largest |batched - single| over every method and image, relative to the method's largest value."""
    return max(float((together[k][i] - alone[i][k][0]).abs().max() / together[k].abs().max().clamp_min(1e-30))
               for k in together for i in range(len(alone)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["small_cnn", "small_vit"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--internal-batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--nchw", action="store_true", help="keep CNNs in NCHW")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.batch} images per call, {args.size} px")
    for name in args.models:
        model, spec, layout = build(name, args.size, not args.nchw)
        x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=layout)
        wall_pass, cpu_pass = (t / args.batch for t in best_time(lambda: one_pass(model, x), args.repeats))
        print(f"\n{name}: one forward+backward pass {1e3 * wall_pass:.2f} ms/image wall, {1e3 * cpu_pass:.2f} CPU")
        print(f"{'method':16s} {'s/image':>8s} {'passes':>7s} {'CPU passes':>10s} {'nominal':>8s} {'CPU ratio':>9s}")
        options = {"ig_smoothgrad": {"steps": args.steps, "samples": args.samples,
                                     "internal_batch_size": args.internal_batch_size}}
        methods = [create_method(m, model, spec, **options.get(m, {})) for m in DEFAULT_METHODS[spec.family]]
        with torch.no_grad():
            target = model(x).argmax(1)
        for method in methods:
            wall, cpu = (t / args.batch for t in best_time(lambda: method.attribute(x, target), args.repeats))
            print(f"{method.name:16s} {wall:8.4f} {wall / wall_pass:7.2f} {cpu / cpu_pass:10.2f} "
                  f"{method.nominal_passes:8.1f} {cpu / cpu_pass / method.nominal_passes:9.2f}")

        cheap = [m for m in methods if m.nominal_passes <= 2]
        _, shared = best_time(lambda: Attributor(cheap).attribute(x), args.repeats)
        _, alone = best_time(lambda: [m.attribute(x) for m in cheap], args.repeats)
        print(f"shared pass for {', '.join(m.name for m in cheap)}: {shared / args.batch / cpu_pass:.2f} CPU passes "
              f"per image (one by one: {alone / args.batch / cpu_pass:.2f})")

        ig = next(m for m in methods if m.name == "ig_smoothgrad")
        calls = {"shared cheap methods": lambda xs: Attributor(cheap).attribute(xs)[1],
                 "ig_smoothgrad": lambda xs: {"ig_smoothgrad": ig.attribute(xs)}}
        for label, call in calls.items():
            together, *batched = timed(lambda: call(x))
            alone, *single = timed(lambda: [call(x[i:i + 1]) for i in range(len(x))])
            print(f"{label}: one call on {args.batch} images {batched[0] / args.batch:.4f} s/image, one image per call "
                  f"{single[0] / args.batch:.4f} ({single[0] / batched[0]:.2f}x wall, "
                  f"{single[1] / batched[1]:.2f}x CPU); "
                  f"largest relative map difference {largest_difference(together, alone):.1e}")


if __name__ == "__main__":
    main()
