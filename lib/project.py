"""Where the project is: the one call every notebook makes first (core layer, apart from the runner).

A notebook runs in JupyterLab (working directory ``notebooks/``) and under ``python -m lib.stage`` (the project
root) alike: :func:`enter_project` makes its relative paths mean the same in both. It lives here, not in the
runner, so that the runner is in no stage's dependencies: a change to ``lib.stage`` reruns nothing.
"""

from __future__ import annotations

import os
from pathlib import Path


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
