"""Exploring never invalidates a stage: every notebook is paired with a jupytext percent twin (jupytext.toml),
DVC depends on the twin and lib.stage runs it, so what JupyterLab's autosave writes into the .ipynb (outputs,
execution counts, metadata) changes no stage."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from jupytext.config import load_jupytext_configuration_file

from lib import stage
from lib.pipeline import STAGES, twin

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_twin_are_in_sync(notebook):
    config = load_jupytext_configuration_file(str(ROOT / "notebooks/jupytext.toml"))
    text = jupytext.writes(jupytext.read(notebook), fmt="py:percent", config=config)
    assert twin(notebook).is_file(), f"{twin(notebook)} is missing: jupytext --sync {notebook.relative_to(ROOT)}"
    assert text == twin(notebook).read_text(), (
        f"{notebook.name} and its twin differ: `jupytext --sync notebooks/*.ipynb` (the newer side wins)")
    assert not stage.twin_differs(notebook)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_names_the_project_kernel(notebook):
    nb = nbformat.read(str(notebook), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [c for c in code if c.get("outputs")], "outputs committed: clear them (Lab: Edit > Clear All Outputs)"
    assert not [c for c in code if c.get("execution_count") is not None], "execution counts committed"
    assert nb.metadata["kernelspec"] == stage.KERNELSPEC
    makefile = (ROOT / "Makefile").read_text()
    assert f'--name {stage.KERNELSPEC["name"]} --display-name "{stage.KERNELSPEC["display_name"]}"' in makefile
    tagged = [c for c in jupytext.read(twin(notebook)).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the twin keeps the parameters tag"


def test_twin_defines_the_cells_that_run(tmp_path):
    """lib.stage reads the twin: a cell edited only in the .py is what runs (and what the parameters are)."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(ROOT / "notebooks/01_train.ipynb", notebooks)
    text = (ROOT / "notebooks/01_train.py").read_text().replace('arch = "cnn"', 'arch = "twin"')
    (notebooks / "01_train.py").write_text(text)
    nb = stage.read_notebook(notebooks / "01_train.ipynb")
    assert stage.notebook_parameters(notebooks / "01_train.ipynb")["arch"] == "twin"
    assert nb.metadata["kernelspec"]["name"] == "pruning-beyond-accuracy" and not nb.metadata.get("jupytext")
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert stage.twin_differs(notebooks / "01_train.ipynb")


@pytest.mark.parametrize("name", [n for n, s in STAGES.items() if s.notebook])
def test_notebook_stages_depend_on_the_twin_not_the_ipynb(name):
    stage_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    deps = stage_yaml["deps"]
    assert str(twin(STAGES[name].notebook)) in deps and STAGES[name].notebook not in deps


def _dep_hashes(root: Path) -> dict:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {f"{s.addressing}:{d}": (d.get_hash().value if d.exists else None)
                for s in repo.index.stages for d in s.deps}


def _status(root: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_lab_autosave_changes_no_stage(tmp_path):
    """A copy of the checkout (tracked and untracked-not-ignored files); a notebook gets outputs, execution
    counts and new metadata as Lab's autosave writes them: the stages' dependency hashes and `dvc status` are
    those of before. Editing the twin's code does change the stage (the check can fail)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    copy = tmp_path / "repo"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    before_hashes, before_status = _dep_hashes(copy), _status(copy)

    path = copy / "notebooks/02_prune.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    for count, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), 1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="100%|##########| 3/3\n")]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
        cell.metadata["collapsed"] = False
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.12.3"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, str(path))

    assert _dep_hashes(copy) == before_hashes
    assert _status(copy) == before_status

    twin_path = copy / "notebooks/02_prune.py"
    twin_path.write_text(twin_path.read_text() + "\n# %%\nprint('a real change')\n")
    changed = {k for k, v in _dep_hashes(copy).items() if before_hashes[k] != v}
    assert changed and all(k.endswith("notebooks/02_prune.py") for k in changed)
