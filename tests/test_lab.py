"""JupyterLab as `make lab` starts it (tests/lab_server.py: the Makefile's command line, its root and --config, in
a git copy of the checkout): a save pairs each notebook with its twin, a run without edits leaves git clean, and
an edit of code or markdown makes exactly the stages that run that notebook stale. The browser does the same in
scripts/browser_check.py (`make browser-check`)."""

import copy
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e '.[test]')")
pytest.importorskip("jupytext", reason="jupytext is not installed (pip install -e '.[test]')")
if shutil.which("make") is None or shutil.which("git") is None:
    pytest.skip("make and git are needed to start JupyterLab as `make lab` does", allow_module_level=True)

from lab_server import dvc_status, git, lab_server, stages_naming  # noqa: E402 (after the skips)

from lib.pipeline import STAGES, twin  # noqa: E402

NOTEBOOK = "03_interpret.ipynb"
TWIN = "notebooks/03_interpret.py"
LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3", "version": "3.11.2"}


def as_after_a_run(content: dict) -> dict:
    """What Lab holds after Run All: outputs (text, a figure, a progress widget), execution counts and timing,
    the kernel's language_info, widget state."""
    content = copy.deepcopy(content)
    code = [cell for cell in content["cells"] if cell["cell_type"] == "code"]
    for count, cell in enumerate(code, 1):
        cell["execution_count"] = count
        cell["outputs"] = [
            {"output_type": "stream", "name": "stdout", "text": "checkpoints: 5/5\n"},
            {"output_type": "display_data", "metadata": {}, "data": {
                "image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 640x480 with 1 Axes>"}},
            {"output_type": "display_data", "metadata": {}, "data": {
                "application/vnd.jupyter.widget-view+json": {"model_id": "0a1b", "version_major": 2,
                                                             "version_minor": 0}, "text/plain": "5/5"}},
            {"output_type": "execute_result", "execution_count": count, "metadata": {}, "data": {"text/plain": "1"}},
        ]
        cell["metadata"]["execution"] = {"iopub.execute_input": "2026-12-07T16:00:00.000000Z"}
        cell["metadata"]["trusted"] = True
        cell["metadata"]["scrolled"] = True
    content["metadata"]["language_info"] = dict(LANGUAGE_INFO)
    content["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    return content


@pytest.mark.slow
def test_lab_pairs_each_notebook_with_its_twin_and_git_sees_only_edits(tmp_path):
    with lab_server(tmp_path) as lab:
        notebooks = sorted(lab.repo.glob("notebooks/*.ipynb"))
        before = {path: path.read_bytes() for path in notebooks + [twin(path) for path in notebooks]}

        # Open, run and save every notebook without editing it: nothing on disk changes, so git and DVC see nothing
        for path in notebooks:
            lab.save(path.name, as_after_a_run(lab.get(path.name)))
        changed = sorted(str(path.relative_to(lab.repo)) for path in before if path.read_bytes() != before[path])
        assert not changed, f"saving without an edit rewrote {changed}"
        assert git(lab.repo, "status", "--porcelain") == ""
        assert "Loaded Jupytext configuration file" in lab.log.read_text()
        untouched = dvc_status(lab.repo)

        # Edit a markdown cell and a code cell, run, save: both reach the twin, and only there and in the .ipynb
        content = as_after_a_run(lab.get(NOTEBOOK))
        markdown = next(cell for cell in content["cells"] if cell["cell_type"] == "markdown")
        code = next(cell for cell in content["cells"] if cell["cell_type"] == "code"
                    and "parameters" not in cell["metadata"].get("tags", []))
        markdown["source"] += "\n\nA note added in JupyterLab."
        code["source"] += "\nprint('a line added in JupyterLab')"
        lab.save(NOTEBOOK, content)
        twin_text = (lab.repo / TWIN).read_text()
        assert "# A note added in JupyterLab." in twin_text and "print('a line added in JupyterLab')" in twin_text
        assert "checkpoints: 5/5" not in (lab.repo / "notebooks" / NOTEBOOK).read_text()  # outputs stay in Lab
        assert sorted(git(lab.repo, "status", "--porcelain").splitlines()) == [
            f" M notebooks/{NOTEBOOK}", f" M {TWIN}"]

        # A notebook elsewhere (a scratch copy in a subfolder) keeps its outputs: the hook strips only the pairs
        lab.request("PUT", "contents/scratch", {"type": "directory"})
        lab.save("scratch/mine.ipynb", content)
        assert "checkpoints: 5/5" in (lab.repo / "notebooks/scratch/mine.ipynb").read_text()

        # Reopened, the notebook shows the twin's cells: what the pipeline runs
        reopened = lab.get(NOTEBOOK)
        assert [cell["source"] for cell in reopened["cells"]] == [cell["source"] for cell in content["cells"]]

    # `dvc status` names exactly the stages that run notebook 03 (the copy has no outputs, so it lists every
    # stage), and nothing else changed for DVC since the saves without edits
    edited = dvc_status(lab.repo)
    runs_03 = {name for name, stage in STAGES.items() if stage.notebook == f"notebooks/{NOTEBOOK}"}
    stale = stages_naming(edited, TWIN)
    assert stale == {name for name in edited if name.split("@")[0] in runs_03} and stale, stale
    assert not stages_naming(untouched, TWIN)
    assert {name: changes for name, changes in edited.items() if name not in stale} == {
        name: changes for name, changes in untouched.items() if name not in stale}


def test_make_lab_serves_the_notebooks_with_the_servers_config():
    """The command the tests above read from the Makefile: notebooks/ as the root, jupyter_server_config.py."""
    from lab_server import ROOT, make_command

    command = make_command(ROOT, "lab", "jupyter")
    assert command[-1] == "notebooks" and f"--config={ROOT}/jupyter_server_config.py" in command
    assert (ROOT / "notebooks/jupytext.toml").is_file() and not (ROOT / "jupytext.toml").exists()
    assert sys.executable in command


def test_the_analysis_progress_bar_knows_its_total(pruned_cnn, monkeypatch, capsys):
    """Lab's widget reads `checkpoints: 2/2`, not `2/?` (the same tqdm total drives the headless lines)."""
    from lib import analysis, storage
    from lib.results import list_checkpoints

    monkeypatch.setenv(storage.HEADLESS_ENV, "1")
    monkeypatch.setenv(storage.PROGRESS_INTERVAL_ENV, "0")
    steps = [record["step"] for record in list_checkpoints(pruned_cnn)]
    assert len(steps) == 2

    def score(record, model):
        return analysis.Scored(row={"n": 1})

    analysis.score_checkpoints(pruned_cnn, score, {"test": "total"}, None)
    assert capsys.readouterr().err.splitlines()[-1].startswith("[progress] checkpoints: 2/2 (100%)")
    analysis.score_checkpoints(pruned_cnn, score, {"test": "total"}, None, steps=[steps[0]])
    assert capsys.readouterr().err.splitlines()[-1].startswith("[progress] checkpoints: 1/1 (100%)")
