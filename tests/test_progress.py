"""Progress of long loops reaches the terminal under `python -m lib.stage` (plain lines, relayed), and the
executed notebook keeps finished text bars, not widgets frozen at 0%."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from lib import stage, storage

ROOT = Path(__file__).resolve().parents[1]


def test_headless_bars_are_plain_periodic_lines(monkeypatch, capsys):
    monkeypatch.setenv(storage.HEADLESS_ENV, "1")
    monkeypatch.setenv(storage.PROGRESS_INTERVAL_ENV, "0")
    bar = storage.progress_bar(range(4), desc="epochs")
    for _ in bar:
        bar.set_postfix(loss="0.1")
    for _ in storage.progress_bar(iter(range(2)), desc="images"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith(storage.PROGRESS_PREFIX) for line in lines)
    assert lines[-4].startswith("[progress] epochs: 4/4 (100%)") and "loss=0.1" in lines[-4]
    assert lines[-1] == "[progress] images: 2, 00:00 elapsed"
    assert len(lines) == len(set(lines)), "a finished bar is not printed twice"


def test_interactive_bars_stay_tqdm_auto(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.delenv(storage.HEADLESS_ENV, raising=False)
    assert type(storage.progress_bar(range(1), disable=True)) is tqdm


def test_relay_labels_progress_and_notices(capsys):
    relay = stage.NoticeRelay("02_prune")
    relay.write("noise\n[progress] pruning steps: 1/3 (33%)\r[notice] resum")
    relay.write("ing\n[progress] \x1b[A\n[progress] epochs: 2/2 \x1b[A\n")  # a nested bar closing
    assert capsys.readouterr().err.splitlines() == ["lib.stage: 02_prune: pruning steps: 1/3 (33%)",
                                                     "lib.stage: resuming", "lib.stage: 02_prune: epochs: 2/2"]


NOTEBOOK = '''# %% tags=["parameters"]
out_dir = "data/smoke/x"
n = 3

# %%
import os
from pathlib import Path
from lib.storage import progress_bar
for i in progress_bar(range(n), desc="rounds"):
    pass
Path(out_dir).mkdir(parents=True, exist_ok=True)
'''


@pytest.mark.slow
def test_stage_run_relays_progress_and_keeps_finished_bars(tmp_path):
    """A notebook run by lib.stage in a scratch project: the terminal gets its progress lines, the executed
    copy a finished text bar and no widget."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb/t.py").write_text(NOTEBOOK)
    jupytext.write(jupytext.reads(NOTEBOOK, fmt="py:percent"), tmp_path / "nb/t.ipynb")
    env = {**os.environ, "PYTHONPATH": str(ROOT), storage.PROGRESS_INTERVAL_ENV: "0"}
    env.pop(storage.HEADLESS_ENV, None)
    result = subprocess.run([sys.executable, "-m", "lib.stage", "nb/t.ipynb", "out", "--set", "n=4"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "lib.stage: t: rounds: 4/4 (100%)" in result.stderr
    executed = json.loads((tmp_path / "out/t.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "rounds: 4/4 (100%)" in text
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert executed["metadata"]["kernelspec"]["name"] == stage.KERNELSPEC["name"]
