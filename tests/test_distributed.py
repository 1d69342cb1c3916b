"""torchrun with two CPU processes (gloo) gives the same model as one process, up to numerical tolerance."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tiny_shapes, tmp_path):
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, str(WORKER), str(tiny_shapes), str(single)], check=True, env=_env(), cwd=ROOT)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                    str(WORKER), str(tiny_shapes), str(ddp)], check=True, env=_env(), cwd=ROOT, timeout=600)
    a, b = torch.load(single, weights_only=True), torch.load(ddp, weights_only=True)
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key], rtol=1e-4, atol=1e-5, msg=key)
    assert a["test_acc"] == b["test_acc"]
    for x, y in zip(a["history"], b["history"]):
        assert abs(x["train_loss"] - y["train_loss"]) < 1e-5 and x["val_acc"] == y["val_acc"]
