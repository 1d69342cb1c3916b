"""Parameter sweeps: `dvc exp run --queue` + `dvc queue start -j 2` run two parameter sets in parallel."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args, cwd, env, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-1500:]}\n{result.stderr[-1500:]}"
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed for dvc experiments")
def test_queued_experiments_run_two_parameter_sets_in_parallel(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    repo = tmp_path / "repo"
    _run(["git", "clone", "--quiet", str(ROOT), str(repo)], tmp_path, env)
    # the working tree of this checkout (committed or not) is what is under test
    for name in ("lib", "notebooks", "dvc.yaml", "params.yaml"):
        src, dst = ROOT / name, repo / name
        shutil.rmtree(dst, ignore_errors=True) if dst.is_dir() else dst.unlink(missing_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() else shutil.copy(src, dst)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "under test", "--allow-empty"], repo, env)
    for seed in (1, 2):
        _run(["dvc", "exp", "run", "--queue", "--name", f"seed{seed}", "-S", f"data.seed={seed}",
              "-S", "data.n_train=20", "-S", "data.n_val=10", "-S", "data.n_test=10", "-S", "data.n_eval=5", "data"], repo, env)
    _run(["dvc", "queue", "start", "-j", "2"], repo, env)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = _run(["dvc", "queue", "status"], repo, env)
        if "Success" in status and "Running" not in status and "Queued" not in status:
            break
        assert "Failed" not in status, _run(["dvc", "queue", "logs", "seed1"], repo, env) + status
        time.sleep(3)
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env))
    names = {exp.get("name") for rev in shown for exp in (rev.get("experiments") or [])}
    assert {"seed1", "seed2"} <= names, shown
    seeds = set()
    for rev in shown:
        for exp in rev.get("experiments") or []:
            for run in exp.get("revs") or []:
                params = run["data"]["params"]["params.yaml"]["data"]
                seeds.add(params["data"]["seed"])
    assert seeds >= {1, 2}
