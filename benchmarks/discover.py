"""Speed of unsupervised object discovery on 224-px images: images per second, per backbone and algorithm.

    python benchmarks/discover.py [--batch 16] [--repeats 3] [--threads 2]

For each backbone, the patch features of a batch of random 224-px images (one forward pass), then
LOST and TokenCut on them; "total" is features + algorithm, what one image costs end to end. Weights
do not change the cost, so the ResNet-50 and the ViT are randomly initialised (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import time

import torch

from lib.discover import LOST, PatchFeatures, TokenCut
from lib.models import create_model

BACKBONES = {
    # name: (registry name, create kwargs, PatchFeatures kwargs)
    "efficientnet_lite0 (ImageNet)": ("efficientnet_lite0", {"pretrained": True}, {}),
    "resnet50, layer4 dilated (LOST)": ("torchvision/resnet50", {}, {"dilation": 2}),
    "vit_small_patch16_224, keys": ("timm/vit_small_patch16_224", {}, {"which": "k"}),
}


def best_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs (after one warm-up): the least disturbed by other processes."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, 224, 224)
    algorithms = {"lost": LOST(k_patches=100), "tokencut": TokenCut(tau=0.2, eps=1e-5)}
    print(f"images/s on 224-px images, batch {args.batch}, {torch.get_num_threads()} torch thread(s), "
          f"best of {args.repeats}")
    header = f"{'backbone':34s} {'grid':>6s} {'features':>9s}" + "".join(
        f" {m:>9s} {m + ' total':>15s}" for m in algorithms)
    print(header)
    print("-" * len(header))
    for label, (name, kwargs, feature_kwargs) in BACKBONES.items():
        model = create_model(name, num_classes=1000, **kwargs).eval()
        extractor = PatchFeatures(model, name, **feature_kwargs)
        feats, grid = extractor(images)
        seconds = {"features": best_time(lambda: extractor(images), args.repeats)}
        for algorithm_name, algorithm in algorithms.items():
            seconds[algorithm_name] = best_time(lambda: algorithm(feats, grid), args.repeats)
        rate = {k: args.batch / v for k, v in seconds.items()}
        line = f"{label:34s} {grid[0]:>3d}x{grid[1]:<2d} {rate['features']:9.1f}"
        for algorithm_name in algorithms:
            total = args.batch / (seconds["features"] + seconds[algorithm_name])
            line += f" {rate[algorithm_name]:9.1f} {total:15.1f}"
        print(line)


if __name__ == "__main__":
    main()
