"""Does compaction turn structured sparsity into speed? MACs ratio and measured CPU latency ratio of the
compacted model against the dense one, for the default CNN and the CIFAR ResNet-20/56 pruned one-shot
(global L1, classifier dense, as the pruning presets do) by filters and by connections.

    OMP_NUM_THREADS=1 python benchmarks/compaction.py [--batch 128] [--repeats 7] [--threads 1]

``speedup`` = dense latency / compacted latency, ``macs_reduction`` = dense MACs / compacted MACs, and
``efficiency`` = speedup / macs_reduction (1: the speed-up is all the MACs reduction promises). Latency is
the fastest of ``--repeats`` timed forward passes (after a warm-up), dense and compacted taking turns: on a
shared machine the minimum is the least disturbed estimate. The ResNets use their pretrained CIFAR-10 weights when ../shared/data is there,
so that L1 selection sees real weights; the default CNN is randomly initialised.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from lib.models import create_model, get_spec
from lib.prune import compact, get_pruner, layer_macs, prunable_parameters

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "pretrained"
MODELS = {  # name: (registry name, image size, pretrained weights file)
    "small_cnn (default CNN)": ("small_cnn", 64, None),
    "cifar_resnet20": ("cifar_resnet20", 32, "resnet20-12fca82f.th"),
    "cifar_resnet56": ("cifar_resnet56", 32, "resnet56-4bfd9763.th"),
}


@torch.no_grad()
def latencies(models: list[torch.nn.Module], x: torch.Tensor, repeats: int) -> list[float]:
    """Fastest forward pass of each model; the models take turns, so a burst of load on a shared
    machine hits them alike."""
    for model in models:
        model.eval()(x)  # warm-up (allocations, oneDNN primitive creation)
    best = [float("inf")] * len(models)
    for _ in range(repeats):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model(x)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def macs(model, x) -> int:
    return sum(v["macs"] for v in layer_macs(model, x[:1]).values())


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--scope", default="global", choices=["global", "layer"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for label, (name, size, weights) in MODELS.items():
        path = WEIGHTS / weights if weights and (WEIGHTS / weights).is_file() else None
        dense = create_model(name, 10, weights=path).eval()
        x = torch.randn(args.batch, 3, size, size)
        dense_macs = macs(dense, x)
        for pruner in ("filters", "connections"):
            for rate in args.rates:
                model = create_model(name, 10, weights=path).eval()
                params = prunable_parameters(model, exclude=(get_spec(name).classifier,))
                get_pruner(pruner, scope=args.scope).prune(model, params, rate, x[:2])
                small = compact(model, x[:2])
                dense_latency, small_latency = latencies([dense, small], x, args.repeats)
                speedup, reduction = dense_latency / small_latency, dense_macs / macs(small, x)
                rows.append({"model": label, "pruner": pruner, "sparsity": rate,
                             "macs_ratio": round(1 / reduction, 3), "latency_ratio": round(1 / speedup, 3),
                             "macs_reduction": round(reduction, 2), "speedup": round(speedup, 2),
                             "efficiency": round(speedup / reduction, 2),
                             "dense_ms": round(1000 * dense_latency, 1), "compacted_ms": round(1000 * small_latency, 1)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\nbatch {args.batch}, {args.threads} thread(s), {args.scope} L1 selection, fastest of {args.repeats} passes")
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
