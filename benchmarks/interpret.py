"""Cost of the attributions, counted in forward+backward passes.

    python benchmarks/interpret.py                 # small_cnn and small_vit at 64 px, 16 images per call
    python benchmarks/interpret.py --models efficientnet_lite0 --size 160 --batch 8 --internal-batch-size 32

Every figure is a median over ``--repeats`` interleaved samples (benchmarks/timing.py: the cases take
turns, a b c a b c ..., and each sample repeats its call until it lasts ``--min-seconds``), with the spread.

For each model: the baseline, ONE forward+backward pass of the ``--batch`` images (gradient w.r.t. the
input, parameters frozen, as the attributions run it), timed in samples of many passes; the same pass at
``--internal-batch-size`` rows (the chunk IG runs); then every attribution on the batch, as passes of the
baseline per image against its nominal count (IG in SmoothGrad: steps x samples). IG is also run one
image per call (ratio to the batched call, per image; the maps are compared) and as captum's
``IntegratedGradients`` on the same noisy rows (what lib's IG reproduces). Then the shared pass (every
cheap attribution in one Attributor call) against the same attributions one by one. CNNs run in channels_last, as
the stage runs them (``--nchw`` to compare).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import compare, describe, ratio  # noqa: E402

from lib.interpret.methods import DEFAULT_ATTRIBUTIONS, Attributor, create_attribution, frozen  # noqa: E402
from lib.models import create_model, get_spec  # noqa: E402


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
    """Largest |batched - single| over every attribution and image, relative to the attribution's largest value."""
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
    parser.add_argument("--repeats", type=int, default=5, help="interleaved samples per case")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="shortest sample")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--nchw", action="store_true", help="keep CNNs in NCHW")
    parser.add_argument("--no-captum", action="store_true", help="skip captum's IntegratedGradients reference")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.batch} images per call, {args.size} px; "
          f"medians of {args.repeats} interleaved samples of >= {args.min_seconds} s")
    summary = []
    for name in args.models:
        model, spec, layout = build(name, args.size, not args.nchw)
        b = args.batch
        x = torch.randn(b, 3, args.size, args.size).contiguous(memory_format=layout)
        rows = torch.randn(args.internal_batch_size, 3, args.size, args.size).contiguous(memory_format=layout)
        options = {"ig_smoothgrad": {"steps": args.steps, "samples": args.samples,
                                     "internal_batch_size": args.internal_batch_size}}
        attributions = [create_attribution(m, model, spec, **options.get(m, {})) for m in DEFAULT_ATTRIBUTIONS[spec.family]]
        with torch.no_grad():
            target = model(x).argmax(1)
        ig = next(m for m in attributions if m.name == "ig_smoothgrad")
        cases = {"pass": lambda: one_pass(model, x), "pass@chunk": lambda: one_pass(model, rows)}
        cases.update({m.name: (lambda m=m: m.attribute(x, target)) for m in attributions})
        cases["ig_smoothgrad one image per call"] = lambda: [ig.attribute(x[i:i + 1], target[i:i + 1]) for i in range(b)]
        if not args.no_captum:
            from captum.attr import IntegratedGradients

            noisy = (x[None] + ig.noise(x)).flatten(0, 1).contiguous(memory_format=layout)

            def captum_ig():
                with frozen(model):
                    IntegratedGradients(model).attribute(
                        noisy, baselines=0.0, target=target.repeat(args.samples), n_steps=args.steps,
                        internal_batch_size=max(args.internal_batch_size, len(noisy)))
            cases["captum IntegratedGradients"] = captum_ig
        timings = compare(cases, args.repeats, args.min_seconds)
        per_pass = timings["pass"].median / b
        print(f"\n{name}: one forward+backward pass of {b} images, per image:")
        print(describe("  pass (baseline)", timings["pass"], per=b))
        print(describe(f"  pass at {args.internal_batch_size} rows", timings["pass@chunk"], per=args.internal_batch_size))
        print(f"  {'attribution':32s} {'passes/image':>12s} {'nominal':>8s} {'ratio (median, min-max over rounds)':>36s}")
        for label in [m.name for m in attributions] + [k for k in cases if k.startswith(("ig_smoothgrad ", "captum"))]:
            nominal = ig.nominal_passes if label.startswith(("ig_", "captum")) else next(
                m.nominal_passes for m in attributions if m.name == label)
            med, lo, hi = ratio(timings, label, "pass", scale=nominal)
            cpu_med = ratio(timings, label, "pass", scale=nominal, cpu=True)[0]
            print(f"  {label:32s} {timings[label].median / b / per_pass:12.2f} {nominal:8.1f} "
                  f"{med:10.2f} ({lo:.2f}-{hi:.2f}); CPU {cpu_med:.2f}")
        print(describe("  ig_smoothgrad, s/image", timings["ig_smoothgrad"], per=b, unit="s", factor=1))
        # IG's own overhead: against passes of the chunk it runs (rows per chunk, per row), not of the batch.
        chunk = ratio(timings, "ig_smoothgrad", "pass@chunk", scale=ig.nominal_passes * b / args.internal_batch_size)
        print(f"  ig_smoothgrad against {ig.nominal_passes:.0f} passes at {args.internal_batch_size} rows per image: "
              f"{chunk[0]:.2f} (min-max {chunk[1]:.2f}-{chunk[2]:.2f})")
        single = ratio(timings, "ig_smoothgrad one image per call", "ig_smoothgrad")
        print(f"  ig_smoothgrad batched speed-up over one image per call: {single[0]:.2f}x "
              f"(min-max {single[1]:.2f}-{single[2]:.2f})")
        together = {"ig_smoothgrad": ig.attribute(x, target)}
        alone = [{"ig_smoothgrad": ig.attribute(x[i:i + 1], target[i:i + 1])} for i in range(b)]
        print(f"  largest relative map difference, batched vs one image per call: "
              f"{largest_difference(together, alone):.1e}")
        summary.append((name, ratio(timings, "ig_smoothgrad", "pass", scale=ig.nominal_passes), chunk, single))

        cheap = [m for m in attributions if m.nominal_passes <= 2]
        shared_cases = {"shared": lambda: Attributor(cheap).attribute(x), "alone": lambda: [m.attribute(x) for m in cheap],
                        "pass": lambda: one_pass(model, x)}
        shared = compare(shared_cases, args.repeats, args.min_seconds)
        print(f"  shared pass for {', '.join(m.name for m in cheap)}: "
              f"{ratio(shared, 'shared', 'pass')[0]:.2f} passes per image (one by one: "
              f"{ratio(shared, 'alone', 'pass')[0]:.2f})")
    print("\nsummary, IG in SmoothGrad: time / (nominal passes x one pass of the batch); the same against passes at "
          "the chunk size; speed-up of the batched call over one image per call (median, min-max over rounds)")
    for name, (med, lo, hi), (c_med, c_lo, c_hi), (s_med, s_lo, s_hi) in summary:
        print(f"  {name:12s} {med:.2f} ({lo:.2f}-{hi:.2f});  {c_med:.2f} ({c_lo:.2f}-{c_hi:.2f});  "
              f"{s_med:.2f}x ({s_lo:.2f}-{s_hi:.2f})")


if __name__ == "__main__":
    main()
