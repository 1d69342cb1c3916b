"""Every environment variable the library reads, in one place: what switches behaviour from outside the parameters.

======================== ========================= ================================================================
variable                 default                   effect
======================== ========================= ================================================================
``RANK``                 ``0``                     torchrun's rank of this process. Only rank 0 writes files
                                                   (``lib.storage``), starts the stage's kernel and writes the
                                                   flat summary (``lib.stage``): the other ranks run the same
                                                   notebook into the same paths and write nothing.
``WORLD_SIZE``           ``1``                     torchrun's number of processes: above 1, ``lib.distributed``
                                                   joins the process group (NCCL on GPUs, gloo on CPUs).
``LOCAL_RANK``           ``0``                     torchrun's rank on this machine: the CUDA device it uses.
``DVC_STAGE``            unset                     set by DVC while it runs a stage. ``lib.stage`` then stops the
                                                   run when ``dvc`` itself is killed (no orphan), and accepts an
                                                   OUT_DIR that DVC restored without lib.stage's marker.
``LIB_STAGE_HEADLESS``   unset                     set by ``python -m lib.stage`` for the kernel it starts:
                                                   progress bars are plain lines it relays, not widgets.
``LIB_PROGRESS_INTERVAL`` ``30``                   seconds between two headless progress lines.
``DREAMSIM_WEIGHTS``     unset                     the folder of DreamSim's weights (MIS backend ``dreamsim``);
                                                   without it that backend is refused (nothing is downloaded).
``PRUNING_SHARED_DATA``  ``../shared/data``        the folder of the shared real data (CIFAR-10, ImageNet samples,
                                                   model-vs-human, COCO128, Tiny ImageNet); a relative path is
                                                   taken from the repository root. The tests that need real data
                                                   look there and skip with the reason when it is absent; the
                                                   presets name ``../shared/data/...`` in their parameters.
======================== ========================= ================================================================

Nothing else in ``lib`` reads the environment (``lib.kernel`` sets ``LIB_STAGE_HEADLESS`` for the kernels it
starts); a new switch is one function here and one row above.
"""

from __future__ import annotations

import os
from pathlib import Path

HEADLESS_ENV = "LIB_STAGE_HEADLESS"
PROGRESS_INTERVAL_ENV = "LIB_PROGRESS_INTERVAL"
SHARED_DATA_ENV = "PRUNING_SHARED_DATA"
SHARED_DATA_DEFAULT = "../shared/data"


def rank() -> int:
    """torchrun's ``RANK`` (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """torchrun's ``WORLD_SIZE`` (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """torchrun's ``LOCAL_RANK``: the CUDA device of this process (0 when not under torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def under_dvc() -> bool:
    """Whether DVC runs this process as a stage (it sets ``DVC_STAGE``)."""
    return bool(os.environ.get("DVC_STAGE"))


def headless() -> bool:
    """Whether this process is a kernel run by ``python -m lib.stage`` (papermill), not a human's JupyterLab."""
    return bool(os.environ.get(HEADLESS_ENV))


def progress_interval() -> float:
    """Seconds between two headless progress lines (``LIB_PROGRESS_INTERVAL``, default 30)."""
    return float(os.environ.get(PROGRESS_INTERVAL_ENV) or 30)


def dreamsim_weights() -> str | None:
    """The folder of DreamSim's weights (``DREAMSIM_WEIGHTS``), or None."""
    return os.environ.get("DREAMSIM_WEIGHTS") or None


def shared_data(root: str | Path | None = None) -> Path:
    """The folder of the shared real data (``PRUNING_SHARED_DATA``, default ``../shared/data``), a relative one
    taken from ``root`` (default: the repository root)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    return (root / os.environ.get(SHARED_DATA_ENV, SHARED_DATA_DEFAULT)).resolve()
