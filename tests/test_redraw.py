"""lib.redraw draws a stage's figures with the function its notebook calls (``stage_figures``), from the folder's files:
the same figures, byte for byte, as the notebook saved."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_redraw_gives_the_figures_the_notebook_saved(tmp_path, tiny_shapes, pruned_cnn):
    from lib.interpret.plots import PANELS
    from lib.redraw import redraw

    out = tmp_path / "interpret"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DVC_STAGE", None)
    cli = [sys.executable, "-m", "lib.stage", "notebooks/03_interpret.ipynb", str(out), "--set",
           f"data_dir={tiny_shapes}", f"source={pruned_cnn}", "n_images=4", "attributions=[gradcam, saliency]",
           "perturbation_steps=2", "gallery_size=2", "sanity_images=0"]
    done = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = {p.stem: p.read_bytes() for p in (out / "plots").glob("*.png")}
    assert set(saved) == {*PANELS, "gallery"}

    folder = tmp_path / "copy"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("*.png", "state"))
    written = redraw(folder)
    assert set(written) == set(PANELS)  # the gallery is drawn from relevance maps: the notebook's alone
    for name, path in written.items():
        assert path.read_bytes() == saved[name], name
