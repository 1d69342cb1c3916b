"""Run a notebook as a pipeline stage: parameters from ``params.yaml`` (or a preset), validated first.

    python -m lib.stage NOTEBOOK OUT_DIR [--params SECTION ...] [--set KEY=VALUE ...]
    python -m lib.stage --preset presets/NAME.yaml

``--params train.cnn models.cnn`` merges those sections of ``params.yaml`` (later ones win) into
the notebook's parameters; ``--set`` adds single values (parsed as YAML). A preset file names its
notebook, its output directory and its parameters. Before a kernel starts, every name is checked
against the notebook's ``parameters`` cell: an unknown name is an error, not a silent no-op.

The notebook writes into ``OUT_DIR.partial``; only when it has run to the end is that directory
renamed to ``OUT_DIR``, so a failed or interrupted run never leaves half an output where a reader
looks, and a rerun resumes from what the partial directory holds (e.g. finished pruning rounds).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
from pathlib import Path

import yaml

from lib.params import ParameterError, load_params, parse_sets  # noqa: F401  (part of this CLI's API)

PARAMETERS_TAG = "parameters"


def project_root(start: str | Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: the working directory) holding dvc.yaml."""
    start = Path(start or os.getcwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no dvc.yaml at or above {start}: run from inside the repository")


def enter_project() -> Path:
    """Make paths in parameters relative to the repository root, in JupyterLab and under papermill alike.

    Under ``torchrun`` (the kernel inherits RANK/WORLD_SIZE from its launcher) this also joins the
    process group, so training and evaluation in the notebook run data-parallel.
    """
    from lib import distributed

    root = project_root()
    os.chdir(root)
    distributed.init_from_env()
    return root


def notebook_parameters(notebook: str | Path) -> dict:
    """Names and default values of the notebook's cell tagged ``parameters``."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{notebook} must have exactly one cell tagged '{PARAMETERS_TAG}', found {len(cells)}")
    values = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    values[target.id] = ast.literal_eval(node.value)
    return values


def check_parameters(notebook: str | Path, parameters: dict) -> None:
    known = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ParameterError(
            f"{notebook} has no parameter(s) {unknown}; its parameters are {sorted(known)}. "
            "Fix the name in params.yaml / the preset, or add it to the notebook's parameters cell."
        )


def run_notebook(notebook: str | Path, out_dir: str | Path, parameters: dict, progress: bool = True) -> Path:
    """Execute ``notebook`` with ``parameters`` (plus ``out_dir``) and publish ``out_dir`` atomically."""
    import papermill

    notebook, out_dir = Path(notebook), Path(out_dir)
    if not notebook.is_file():
        raise ParameterError(f"notebook {notebook} does not exist")
    parameters = {**parameters, "out_dir": str(out_dir) + ".partial"}
    check_parameters(notebook, parameters)
    partial = Path(parameters["out_dir"])
    root = project_root(notebook.parent)
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:  # under torchrun every rank executes the notebook; only rank 0 writes and publishes
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            papermill.execute_notebook(str(notebook), f"{scratch}/{notebook.name}", parameters=parameters,
                                       cwd=str(root), progress_bar=False, kernel_name="python3")
        return out_dir
    partial.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(partial / notebook.name), parameters=parameters,
                               cwd=str(root), progress_bar=progress, kernel_name="python3")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    return out_dir


def load_preset(path: str | Path) -> tuple[Path, Path, dict]:
    preset = yaml.safe_load(Path(path).read_text()) or {}
    missing = {"notebook", "out_dir", "parameters"} - set(preset)
    if missing:
        raise ParameterError(f"preset {path} lacks {sorted(missing)} (it needs notebook, out_dir and parameters)")
    return Path(preset["notebook"]), Path(preset["out_dir"]), dict(preset["parameters"] or {})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.stage", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?")
    parser.add_argument("out_dir", nargs="?")
    parser.add_argument("--params", nargs="*", default=[], metavar="SECTION")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--preset", help="a presets/*.yaml file naming notebook, out_dir and parameters")
    parser.add_argument("--params-file", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.preset:
            notebook, out_dir, parameters = load_preset(args.preset)
        else:
            if not (args.notebook and args.out_dir):
                parser.error("give NOTEBOOK and OUT_DIR, or --preset")
            notebook, out_dir = Path(args.notebook), Path(args.out_dir)
            parameters = load_params(args.params, args.params_file)
        parameters.update(parse_sets(args.set))
        run_notebook(notebook, out_dir, parameters)
    except ParameterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # papermill re-raises the notebook's exception: show its message, not the trace
        if type(error).__name__ == "PapermillExecutionError":
            print(f"error in {error.exec_count and f'cell {error.exec_count} of '}{args.notebook or args.preset}: "
                  f"{error.ename}: {error.evalue}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
