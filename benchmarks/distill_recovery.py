"""Tiny recovery check: Lite0 one-shot global L1 at the given targets, each then distilled one epoch over n_train Tiny
ImageNet images (128 px, the preset's recipe); top-1 on n_test ImageNet sample images before and after.

    python benchmarks/distill_recovery.py 320 200 0.2 0.5       (n_train n_test targets...)
    python benchmarks/distill_recovery.py 320 200 0.2 0.5 --lr 0.005 --batch-norm train    (another recipe)
"""
import argparse, time, tempfile
from pathlib import Path
import torch
from lib.data.datasets import classification_data
from lib.models import create_model, get_spec, save_checkpoint
from lib.prune.schedules import PruningPlan, run_schedule
from lib.train import Recipe
torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("n_train", type=int)
parser.add_argument("n_test", type=int)
parser.add_argument("targets", type=float, nargs="+")
parser.add_argument("--lr", type=float, default=0.0005)
parser.add_argument("--batch-norm", default="frozen", choices=("frozen", "train"))
args = parser.parse_args()
n_train, n_test, targets = args.n_train, args.n_test, args.targets
spec = get_spec("efficientnet_lite0")
data = classification_data({"name": "tiny_imagenet", "root": "/work/shared/data/tiny-imagenet-200", "image_size": 128,
                            "test_root": "/work/shared/data/imagenet-sample-images", "limit": n_train, "test_limit": n_test,
                            "n_val": 8, "labels": "imagenet"}, spec.mean, spec.std)
data["id"] = "recovery"
out = Path(tempfile.mkdtemp())
save_checkpoint(out / "dense.pt", create_model("efficientnet_lite0", pretrained=True), "efficientnet_lite0", 1000, {})
plan = PruningPlan(schedule="oneshot", targets=tuple(targets), layers=("conv", "linear"))
recipe = Recipe(epochs=1, batch_size=32, lr=args.lr, momentum=0.9, weight_decay=0.0, schedule="cosine", augment=("flip",),
                distill={"temperature": 4.0, "teacher_outputs": "cached", "batch_norm": args.batch_norm})
t = time.time()
for r in run_schedule(out / "dense.pt", plan, recipe, data, out / "run", progress=False):
    print(f"target {r['target']:.2f} sparsity {r['sparsity']:.3f} before {r['pruned_acc']:.3f} after {r['test_acc']:.3f}", flush=True)
print(f"lr {args.lr}, batch_norm {args.batch_norm}; {time.time() - t:.0f} s; {n_train} training images (1 epoch, 128 px), top-1 on {n_test} sample images")
