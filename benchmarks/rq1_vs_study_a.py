"""The RQ1 scoring against a re-creation of Study A's per-image loop, on the same images and checkpoints.

    python benchmarks/rq1_vs_study_a.py                        # 4 images x 2 checkpoints of small_cnn, 64 px
    python benchmarks/rq1_vs_study_a.py --images 16 --checkpoints 3 --repeats 3

Study A (re-created): for every checkpoint and every image, one at a time, captum's
``NoiseTunnel(IntegratedGradients)`` (SmoothGrad, 2 samples, 50 steps, zero baseline), pytorch_grad_cam's
``GradCAM`` on the last block, each map pooled as Study A pools it and scored with RMA and RRA in numpy.
lib: ``lib.interpret.run.score_model`` with Grad-CAM and IG in SmoothGrad on the batch, only RMA and
RRA (``metrics=["rma", "rra"]``). "Checkpoints" are differently seeded random models (the cost does not
depend on the weights). Medians of interleaved samples (benchmarks/timing.py) and the ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import compare, describe, ratio  # noqa: E402

from lib.interpret.run import score_model  # noqa: E402
from lib.interpret.methods import create_attribution  # noqa: E402
from lib.interpret.metrics import GroundTruth  # noqa: E402
from lib.models import create_model, get_layer, get_spec  # noqa: E402


def study_a_scores(model, layer, x, masks, steps, samples):
    """Study A's loop: one image at a time, captum and pytorch_grad_cam, RMA/RRA in numpy."""
    from captum.attr import IntegratedGradients, NoiseTunnel
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model, [get_layer(model, layer)])
    nt = NoiseTunnel(IntegratedGradients(model))
    out = []
    for i in range(len(x)):
        image, mask = x[i:i + 1], masks[i].astype(bool)
        target = int(model(image).argmax(1))
        ig = nt.attribute(image, nt_type="smoothgrad", nt_samples=samples, stdevs=1.0, baselines=0.0,
                          target=target, n_steps=steps).detach()
        maps = {"ig": (ig[0] ** 2).sum(0).numpy(), "gradcam": cam(image, targets=[ClassifierOutputTarget(target)])[0]}
        for name, relevance in maps.items():
            rma = relevance[mask].sum() / max(relevance.sum(), 1e-12)
            top = np.argsort(relevance.ravel())[::-1][:mask.sum()]
            rra = mask.ravel()[top].mean()
            out.append((i, name, rma, rra))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--internal-batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    models = []
    for seed in range(args.checkpoints):
        torch.manual_seed(seed)
        models.append(create_model(args.model, num_classes=10).eval())  # as Study A: parameters not frozen
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, args.size, args.size, generator=generator)
    masks = np.zeros((args.images, args.size, args.size), dtype=bool)
    masks[:, args.size // 4:3 * args.size // 4, args.size // 4:3 * args.size // 4] = True
    truth = GroundTruth(torch.from_numpy(masks), 2.0)
    layer = spec.cam_layer
    options = {"steps": args.steps, "samples": args.samples, "internal_batch_size": args.internal_batch_size}
    layout = torch.channels_last if spec.family == "cnn" else torch.contiguous_format

    def ours():
        for model in models:
            attributions = [create_attribution("gradcam", model, spec), create_attribution("ig_smoothgrad", model, **options)]
            score_model(model.to(memory_format=layout), attributions, x.contiguous(memory_format=layout), truth,
                        batch_size=args.images, metrics=["rma", "rra"])

    def study_a():
        for model in models:
            study_a_scores(model.to(memory_format=torch.contiguous_format), layer, x, masks, args.steps, args.samples)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} images x {args.checkpoints} "
          f"checkpoints of {args.model} at {args.size} px; IG {args.steps} steps x {args.samples} samples")
    timings = compare({"lib score_model": ours, "Study A per-image loop": study_a}, args.repeats, min_seconds=0)
    work = args.images * args.checkpoints
    for name, timing in timings.items():
        print(describe(name + ", per image", timing, per=work, unit="s", factor=1))
    med, lo, hi = ratio(timings, "Study A per-image loop", "lib score_model")
    print(f"speed-up of lib over Study A's loop: {med:.2f}x (min-max over rounds {lo:.2f}-{hi:.2f})")


if __name__ == "__main__":
    main()
