#!/usr/bin/env bash
# One-GPU check of the heavy paths (training with workers, one LRR round, the analyses on two checkpoints),
# under torchrun --nproc_per_node=1 (NCCL on a GPU, gloo on CPUs); within ~8 minutes on an H200.
#   scripts/device_check.sh [OUT_DIR] [extra args of scripts/device_check.py]
#   DEVICE=cpu scripts/device_check.sh /tmp/check --tiny        # the same code path on the CPU, tiny sizes
# Prints images per second, peak GPU memory and the largest difference against the CPU as a JSON last line.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-$(mktemp -d)}
shift || true
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DEVICE=${DEVICE:-auto}
exec timeout "${TIMEOUT:-480}" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 \
    scripts/device_check.py --out "$OUT" --device "$DEVICE" "$@"
