"""scripts/device_check.sh on the CPU at tiny sizes: the code path the GPU check runs (torchrun, gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_runs_on_cpu_and_matches_itself(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(ROOT / "scripts" / "device_check.sh"), str(tmp_path / "check"), "--tiny"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["device"] == "cpu" and summary["backend"] == "gloo"
    assert summary["train"]["steps"] == 2 and summary["lrr"]["rounds"] == 1
    assert set(summary["analyses"]) == {"step_0", "step_1"}
    assert summary["largest_difference_vs_cpu"] == 0.0  # the CPU against itself
