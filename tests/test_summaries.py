"""Flat, git-tracked summaries of every stage's headline numbers: what `dvc exp show` compares."""

import subprocess
from pathlib import Path

import pytest
import yaml

from lib import stage, storage
from lib.pipeline import STAGES
from lib.results import experiments_table, summarize, write_summary

ROOT = Path(__file__).resolve().parents[1]


def _rows(column="rma_x", values=(0.5, 0.7, 0.6)):
    return {"arch": "cnn", "checkpoints": {f"step_{i:02d}": {"step": i, "sparsity": i * 0.3, "test_acc": 0.9 - i * 0.1,
                                                               column: v, "pointing_x": 1.0, "note": "text"}
                                           for i, v in enumerate(values)}}


def test_summary_holds_dense_best_last_of_the_headline_metrics_only():
    out = summarize("interpret", _rows())
    assert out == {"rma_x_dense": 0.5, "rma_x_best": 0.7, "rma_x_last": 0.6, "sparsity_last": 0.6}
    # pointing_* is declared but not tested (no headline), test_acc is no metric of interpret, text is no number


def test_summary_follows_the_declared_direction_and_training_values():
    prune = summarize("prune", _rows())
    assert prune["test_acc_dense"] == 0.9 and prune["test_acc_best"] == 0.9 and prune["test_acc_last"] == pytest.approx(0.7)
    assert summarize("train", {"arch": "cnn", "test_acc": 0.95, "val_acc": 0.9, "history": [1]}) == {"test_acc": 0.95}
    assert all(isinstance(v, float) for v in prune.values())


def test_experiments_table_reads_the_summaries(tmp_path):
    storage.save_json(tmp_path / "metrics/train/cnn-seed0.json", {"test_acc": 0.95})
    storage.save_json(tmp_path / "metrics/interpret/cnn-lrr-seed0.json", summarize("interpret", _rows()))
    table = experiments_table(tmp_path)
    row = table[(table.stage == "interpret") & (table.metric == "rma_x")].iloc[0]
    assert (row["item"], row.dense, row.best, row["last"]) == ("cnn-lrr-seed0", 0.5, 0.7, 0.6)
    assert table[table.stage == "train"].iloc[0].value == 0.95


def test_cli_writes_the_summary_after_the_run(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def fake_run(notebook, out_dir, parameters, validate=None):
        storage.save_json(Path(out_dir) / "metrics.json", _rows())

    monkeypatch.setattr(stage, "run_notebook", fake_run)
    summary = tmp_path / "metrics/prune/cnn-lrr-seed0.json"
    assert stage.main(["notebooks/02_prune.ipynb", str(out), "--summary", str(summary)]) == 0
    assert storage.load_json(summary)["test_acc_best"] == 0.9


def _dvc_stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", [n for n, s in STAGES.items() if s.notebook])
def test_dvc_metrics_are_the_tracked_flat_summaries(name):
    declared, entry = STAGES[name], _dvc_stages()[name]
    metrics = [next(iter(m)) if isinstance(m, dict) else m for m in entry.get("metrics", [])]
    assert not [m for m in metrics if m.endswith("/metrics.json") or m.startswith("data/")], "nested metrics declared"
    if not any(m.tested for m in declared.metrics):
        assert not metrics
        return
    assert len(metrics) == 1 and metrics[0].startswith(f"metrics/{name}/"), metrics
    assert entry["metrics"][0][metrics[0]] == {"cache": False, "persist": True}  # git-tracked; kept by a failed run
    words = entry["cmd"].split()
    assert words[words.index("--summary") + 1] == metrics[0]
    ignored = subprocess.run(["git", "check-ignore", "-q", metrics[0].replace("${item.arch}", "cnn")
                              .replace("${item.plan}", "lrr").replace("${item.seed}", "0")], cwd=ROOT)
    assert ignored.returncode == 1, f"{metrics[0]} is git-ignored: dvc exp show could not compare it"
