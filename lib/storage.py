"""Atomic writes and safe loading: nothing half-written is ever left where a reader looks."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib import settings

if TYPE_CHECKING:
    import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not what this library writes."""


def _is_writer() -> bool:
    """Under torchrun only rank 0 writes files: every rank runs the same notebook into the same paths."""
    return settings.rank() == 0


def _atomic_replace(path: Path, write) -> Path:
    path = Path(path)
    if not _is_writer():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_replace(Path(path), lambda handle: handle.write(data))


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN/inf become null so every JSON reader (DVC's too) accepts the file."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    return write_bytes(path, text.encode())


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the stage that writes it first (dvc repro).")
    return json.loads(path.read_text())


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch  # here, not above: the stage runner imports this module and must not pay for torch

    return _atomic_replace(Path(path), lambda handle: torch.save(obj, handle))


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`save_torch` with ``weights_only=True``; explain every failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run the stage that writes it (dvc repro).")
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated/corrupt/unsafe files
        # torch's whole message: for a file holding code (a pickled callable) it explains that loading it
        # would execute that code and that weights_only=True refused it; cutting it would hide exactly that.
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it is corrupted, or holds objects that are not plain weights, or "
            "was not written by this library. Delete it and rerun the stage that writes it "
            f"(dvc repro -f <stage>). torch said ({type(error).__name__}):\n{error}"
        ) from error


class DataFileError(ValueError):
    """A data file cannot be read (truncated, corrupt, not what its name says); the message names it."""


def load_npz(path: str | os.PathLike) -> dict:
    """Every array of an ``.npz`` file, read whole; a truncated or corrupt file is named, with the fix."""
    import numpy as np

    path = Path(path)
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except Exception as error:  # zipfile.BadZipFile, ValueError, EOFError, OSError ... from a damaged file
        raise DataFileError(f"data file {path} cannot be read ({type(error).__name__}: {error}): it is truncated "
                            "or corrupt; restore it (dvc checkout) or regenerate it (dvc repro -f data, or "
                            "notebooks/00_data.ipynb for the embedded dataset)") from error


# Lines the library prints with this prefix are notices a user must see (resuming, ignoring a state of
# another run): inside a notebook run by ``python -m lib.stage`` they are relayed to the terminal too.
NOTICE_PREFIX = "[notice] "


def notice(message: str) -> None:
    """Print a notice to stderr (the notebook's output, and the terminal of ``python -m lib.stage``)."""
    print(f"{NOTICE_PREFIX}{message}", file=sys.stderr, flush=True)


# Progress of long loops (epochs, pruning steps, checkpoints, images). In JupyterLab: tqdm.auto's widget bars.
# Headless under ``python -m lib.stage`` (which sets HEADLESS_ENV for the kernel): plain-text bars, redrawn at
# most every PROGRESS_INTERVAL_ENV seconds (default 30) as whole lines with this prefix, which lib.stage relays
# to the terminal; the executed notebook keeps them as text, the last line of a finished bar at 100%.
PROGRESS_PREFIX = "[progress] "
HEADLESS_ENV, PROGRESS_INTERVAL_ENV = settings.HEADLESS_ENV, settings.PROGRESS_INTERVAL_ENV  # lib.settings


_PROGRESS_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%), {elapsed} elapsed, {remaining} left{postfix}"


class _ProgressLines:
    """The file a headless bar writes to: each redraw (``\\r...``) becomes one line ``[progress] ...`` on stderr
    (a redraw equal to the previous line, e.g. a finished bar's at close, is not repeated)."""

    def __init__(self):
        self.last = None

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip() and part.strip() != self.last:
                self.last = part.strip()
                sys.stderr.write(f"{PROGRESS_PREFIX}{self.last}\n")

    def flush(self) -> None:
        sys.stderr.flush()


def headless() -> bool:
    """Whether this process is a kernel run by ``python -m lib.stage`` (papermill), not a human's JupyterLab."""
    return settings.headless()


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``: a widget bar in JupyterLab (tqdm.auto), periodic plain lines headless."""
    if headless():
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", settings.progress_interval())
        total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
        kwargs.setdefault("bar_format", _PROGRESS_FORMAT if total else "{desc}: {n_fmt}, {elapsed} elapsed{postfix}")
        kwargs.update(file=_ProgressLines(), dynamic_ncols=False)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class ImageFileError(ValueError):
    """An image file cannot be opened or decoded (corrupt, truncated or not an image); the message names it."""


def image_error(path: str | os.PathLike, error: BaseException) -> ImageFileError:
    return ImageFileError(f"image {path} cannot be read ({type(error).__name__}: {error}); it is corrupt, truncated "
                          "or not an image: replace it or remove it from the dataset")


def verify_images(paths, what: str = "image", workers: int = 8) -> None:
    """Open every file and check it with PIL's ``verify()`` (headers; for PNG every chunk's checksum, so a
    truncated PNG is caught) before any compute; raises ImageFileError naming the bad files. Threads: the
    work is file reads."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def check(path):
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # noqa: BLE001 -- PIL raises many types (OSError, SyntaxError, ...)
            return f"{path} ({type(error).__name__}: {error})"
        return None

    paths = list(paths)
    with ThreadPoolExecutor(max(1, min(workers, len(paths)))) as pool:
        bad = [b for b in pool.map(check, paths) if b]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ImageFileError(f"{len(bad)} {what} file(s) of {len(paths)} cannot be read (corrupt, truncated or not "
                             f"an image): {'; '.join(bad[:5])}{more}. Replace them or remove them from the dataset.")


# ----------------------------------------------------------------------------- one writer per folder
class BusyError(RuntimeError):
    """Another process holds the lock of a folder this one would write into; the message names it."""


class FolderLock:
    """One writer at a time: an exclusive ``flock`` on ``path`` (e.g. ``data/prune/cnn/lrr.running``), held by
    this process while inside ``with``. The operating system releases it when the holder dies (even by kill -9),
    so a lock is never left stale; the file says who holds it (pid, command, start), for the message of
    :class:`BusyError`, and is removed on release. ``wait``: seconds to wait for a holder that is finishing."""

    def __init__(self, path: str | os.PathLike, what: str, wait: float = 5.0):
        self.path, self.what, self.wait, self.handle = Path(path), what, wait, None

    def __enter__(self) -> "FolderLock":
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "a process that has not said who it is"
                handle.close()
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise BusyError(f"{self.what} is being written by another run ({holder}); wait for it to finish, "
                                "or stop that process, then run again") from None
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}, started {started}: {' '.join(sys.argv)}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.path.unlink(missing_ok=True)  # before the release: a waiting run then locks a new file
            self.handle.close()
            self.handle = None
