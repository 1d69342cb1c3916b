"""One-accelerator check of the pipeline's heavy paths (run by scripts/device_check.sh under torchrun).

    torchrun --nproc_per_node=1 scripts/device_check.py --out /tmp/check            # the GPU defaults
    python scripts/device_check.py --out /tmp/check --tiny                          # CPU, seconds (the test)

1. Generated ImageNet-format JPEGs (``lib.data.fake_imagenet``), ResNet-18 (torchvision, random init) trained
   by ``lib.train.train_classifier`` with DataLoader workers (images per second, peak memory);
2. one LRR round (``lib.prune.schedules.run_schedule``: 20 % of the weights, one retraining epoch);
3. on both checkpoints (dense, round 1) the analyses that lib calls directly, on the device and on the CPU:
   attribution (Grad-CAM, Saliency, IG in SmoothGrad through ``Attributor``), object-discovery features with
   LOST and TokenCut, MIS unit activations (``lib.mis.activations.unit_activations``); the largest
   difference between device and CPU results.

Under torchrun the process group is joined (NCCL on GPUs, gloo on CPUs) and checked with an all_reduce.
Skipped: the notebooks' stage wrappers (RQ1 ground-truth scoring, CorLoc, the human-alignment analyses and
the MIS embeddings/tasks), which read the embedded dataset and are covered by the stage tests on CPU.
Prints a JSON summary as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def init_process_group() -> str | None:
    """Join torchrun's group even with one rank (lib.distributed only does from two), all_reduce a one."""
    import torch.distributed as dist

    if "RANK" not in os.environ or not dist.is_available():
        return None
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    one = torch.ones(1, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(one)
    assert int(one.item()) == dist.get_world_size()
    return dist.get_backend()


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def analyses(model, name: str, images: torch.Tensor, device: torch.device, ig_steps: int) -> dict:
    """Every directly callable analysis on ``device`` and on the CPU: the largest differences."""
    import copy

    from lib.interpret.methods import Attributor, create_attribution
    from lib.data.image_pool import ImagePool
    from lib.discover import LOST, PatchFeatures, TokenCut
    from lib.mis.activations import default_layers, unit_activations
    from lib.models import get_spec

    spec = get_spec(name)
    x = ((images.float() / 255 - torch.tensor(spec.mean)[:, None, None]) / torch.tensor(spec.std)[:, None, None])
    pool = ImagePool(images.permute(0, 2, 3, 1).contiguous().numpy(), [str(i) for i in range(len(images))])
    results = {}
    for where in (device, torch.device("cpu")):
        net = copy.deepcopy(model).to(where).eval()
        attributions = [create_attribution("gradcam", net, spec), create_attribution("saliency", net, spec),
                   create_attribution("ig_smoothgrad", net, steps=ig_steps, samples=2, internal_batch_size=256)]
        started = time.perf_counter()
        target, maps = Attributor(attributions).attribute(x.to(where))
        if where.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        feats, grid = PatchFeatures(net, name)(x.to(where))
        found = {"lost": LOST()(feats.cpu(), grid), "tokencut": TokenCut()(feats.cpu(), grid)}
        layers = default_layers(net, name)
        acts = unit_activations(net, pool, layers, spec.mean, spec.std, batch_size=len(images))
        results[where.type] = {"target": target.cpu(), "maps": maps, "feats": feats, "boxes": found, "acts": acts,
                               "attribution_s": seconds}
    dev, cpu = results[device.type], results["cpu"]
    out = {"attribution_seconds_" + device.type: round(dev["attribution_s"], 3),
           "attribution_seconds_cpu": round(cpu["attribution_s"], 3),
           "same_predictions": bool(torch.equal(dev["target"], cpu["target"])),
           "features": relative_difference(dev["feats"], cpu["feats"]),
           "activations": max(relative_difference(dev["acts"][k], cpu["acts"][k]) for k in cpu["acts"])}
    for attribution in cpu["maps"]:
        out[attribution] = relative_difference(dev["maps"][attribution], cpu["maps"][attribution])
    for algorithm in cpu["boxes"]:
        same = [a.box == b.box for a, b in zip(dev["boxes"][algorithm], cpu["boxes"][algorithm])]
        out[f"{algorithm}_same_boxes"] = float(np.mean(same))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default=os.environ.get("DEVICE", "auto"), help="auto | cpu | cuda")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=200, help="training JPEGs per class")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6, help="dense epochs: epochs x images / batch steps")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: lib's default)")
    parser.add_argument("--analysis-images", type=int, default=16)
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--jpeg-size", type=int, nargs=2, default=(300, 500), help="JPEG sides, min max")
    parser.add_argument("--tiny", action="store_true", help="CPU-test sizes: a few seconds of work")
    args = parser.parse_args(argv)
    if args.tiny:
        args.classes, args.per_class, args.image_size, args.batch, args.epochs = 2, 4, 64, 4, 1
        args.analysis_images, args.ig_steps, args.jpeg_size = 2, 2, (64, 80)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # lib.distributed.default_device then picks the CPU
    backend = init_process_group()

    from lib import distributed as dd
    from lib.data import fake_imagenet, imagenet
    from lib.data.datasets import classification_data
    from lib.prune.schedules import PruningPlan, run_schedule
    from lib.checkpoints import iter_checkpoints
    from lib.models import get_spec
    from lib.train import Recipe, train_classifier

    device = dd.default_device()
    if args.device == "cuda" and device.type != "cuda":
        raise SystemExit("--device cuda but no GPU is visible")
    out = Path(args.out)
    sizes = {"min_size": args.jpeg_size[0], "max_size": args.jpeg_size[1]}
    root = fake_imagenet.write(out / "imagenet", classes=args.classes, per_class=args.per_class, splits=("train",),
                               **sizes)
    fake_imagenet.write(root, classes=args.classes, per_class=max(2, args.per_class // 10), splits=("val",), seed=1,
                        **sizes)
    name = "torchvision/resnet18"
    dataset = {"name": "imagenet", "root": str(root), "num_classes": args.classes, "train_split": "train",
               "n_val": args.classes * 2, "image_size": args.image_size, "resize": round(args.image_size * 8 / 7),
               "augment": True}
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch, lr=0.1, augment=(), num_workers=args.workers,
                    label_smoothing=0.1, seed=0)
    summary = {"device": str(device), "backend": backend, "torch": torch.__version__}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        summary["gpu"] = torch.cuda.get_device_name(device)

    n_train = args.classes * args.per_class
    started = time.perf_counter()
    trained = train_classifier(name, None, recipe, out / "train", dataset=dict(dataset), progress=False)
    seconds = time.perf_counter() - started
    summary["train"] = {"steps": args.epochs * (n_train // args.batch), "seconds": round(seconds, 2),
                        "images_per_s": round(args.epochs * (n_train // args.batch) * args.batch / seconds, 1),
                        "test_acc": trained["test_acc"]}
    if dd.is_main():
        print("trained:", summary["train"], flush=True)

    spec = get_spec(name)
    data = classification_data({k: v for k, v in dataset.items() if k != "num_classes"}, spec.mean, spec.std)
    plan = PruningPlan(schedule="lrr", rate=0.2, threshold=0.15)  # one round reaches 20 % >= 15 %
    started = time.perf_counter()
    steps = run_schedule(out / "train" / "model.pt", plan, Recipe(**{**recipe.__dict__, "epochs": 1}), data,
                         out / "prune", progress=False)
    summary["lrr"] = {"rounds": len(steps) - 1, "seconds": round(time.perf_counter() - started, 2),
                      "sparsity": [round(s["sparsity"], 3) for s in steps]}
    if device.type == "cuda":
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)

    found = imagenet.scan(root, "val")
    from PIL import Image

    images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize(
        (args.image_size, args.image_size)))).permute(2, 0, 1) for f in found["files"][:args.analysis_images]])
    summary["analyses"] = {}
    if dd.is_main():
        for record, model in iter_checkpoints(out / "prune"):
            summary["analyses"][f"step_{record['step']}"] = analyses(model, name, images, device, args.ig_steps)
        numbers = [v for a in summary["analyses"].values() for k, v in a.items()
                   if isinstance(v, float) and not k.endswith(("_boxes",)) and not k.startswith("attribution_seconds")]
        summary["largest_difference_vs_cpu"] = max(numbers) if numbers else 0.0
        print(json.dumps(summary), flush=True)
    dd.barrier()
    return summary


if __name__ == "__main__":
    main()
