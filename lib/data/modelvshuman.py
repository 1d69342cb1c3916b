"""The model-vs-human benchmark's datasets and human trials, read in their released layout.

A root (``../shared/data/model-vs-human``, or a clone of bethgelab/model-vs-human with its
``datasets/``) holds::

    <root>[/datasets]/<name>/<category>/<image>                    cue-conflict, edge, silhouette
    <root>[/datasets]/<name>/dnn/session-<k>/<a>_<b>_<c>_<condition>_<category>_<image>
                                                                   the 12 parametric sets, sketch, stylized
    <root>/raw-data/<name>/<name>_subject-<i>_session_<k>.csv      one file per human observer

Cue-conflict images are named ``<shape><i>-<texture><j>.png``. The human CSVs have the columns
``subj, session, trial, rt, object_response, category, condition, imagename``; an image is matched to
its trials by ``image_id``, the file name without the experiment prefix (``get_short_imagename``).

``download(name, root)`` fetches a dataset from the benchmark's GitHub release for users with internet;
nothing in the default pipeline or the tests calls it.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

PARAMETRIC = ("colour", "contrast", "high-pass", "low-pass", "phase-scrambling", "power-equalisation",
              "false-colour", "rotation", "eidolonI", "eidolonII", "eidolonIII", "uniform-noise")
TEXTURE_SHAPE = ("cue-conflict", "edge", "silhouette")
DATASETS = TEXTURE_SHAPE + ("sketch", "stylized") + PARAMETRIC
RELEASE_URL = "https://github.com/bethgelab/model-vs-human/releases/download/v0.1/{name}.tar.gz"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown model-vs-human dataset {name!r}; the 17 datasets are {DATASETS}")


def short_imagename(imagename: str) -> str:
    """The stimulus file name without the experiment's prefix (modelvshuman's get_short_imagename)."""
    parts = imagename.split("_")
    if len(parts) == 1:
        return parts[0]
    last = parts[-2:]
    return "_".join(last) if last[0].startswith("n0") else last[1]


def texture_category(imagename: str) -> str:
    """Texture class of a cue-conflict image: 'XXX_dog10-bird2.png' -> 'bird' (ShapeBias.get_texture_category)."""
    stem = imagename.split("_")[-1].split(".")[0]
    return "".join(ch for ch in stem.split("-")[-1] if not ch.isdigit())


def dataset_dir(root: str | Path, name: str) -> Path:
    """Where dataset ``name`` lives under ``root`` (``root/name`` or ``root/datasets/name``)."""
    _check_name(name)
    root = Path(root)
    for candidate in (root / name, root / "datasets" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"model-vs-human dataset {name!r} not found under {root} (looked for {root / name} and "
                            f"{root / 'datasets' / name}); point the root at a copy, or call "
                            f"lib.data.modelvshuman.download({name!r}, root) with internet")


def list_images(root: str | Path, name: str) -> pd.DataFrame:
    """One row per image: path, imagename, image_id, category, condition (and texture for cue-conflict)."""
    directory = dataset_dir(root, name)
    rows = []
    if (directory / "dnn").is_dir():  # session layout: condition and category are in the file name
        for path in sorted(p for p in (directory / "dnn").glob("session-*/*") if p.suffix.lower() in IMAGE_SUFFIXES):
            parts = path.name.split("_")
            if len(parts) < 6:
                raise ValueError(f"{path} does not follow <a>_<b>_<c>_<condition>_<category>_<image>")
            rows.append({"path": str(path), "imagename": path.name, "session": path.parent.name,
                         "condition": parts[3], "category": parts[4]})
    else:  # ImageNet layout: <category>/<image>
        for path in sorted(p for p in directory.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES):
            rows.append({"path": str(path), "imagename": path.name, "session": "session-1",
                         "condition": "0", "category": path.parent.name})
    if not rows:
        raise FileNotFoundError(f"no images in {directory}; is it a model-vs-human dataset folder?")
    table = pd.DataFrame(rows)
    table["image_id"] = table["imagename"].map(short_imagename)
    if name == "cue-conflict":
        table["texture"] = table["imagename"].map(texture_category)
    return table


def load_image(path: str | Path, size: int = 224) -> np.ndarray:
    """uint8 (size, size, 3); other sizes are resized (short side 256/224 * size) and centre-cropped, as the benchmark."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return _load_rgb(image, size, Image)
    except OSError as error:  # truncated or corrupt: name the file
        from lib import storage

        raise storage.image_error(path, error) from error


def _load_rgb(image, size: int, Image) -> np.ndarray:
    image = image.convert("RGB")
    if image.size != (size, size):
        short = round(size * 256 / 224)
        w, h = image.size
        scale = short / min(w, h)
        image = image.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def load_images(root: str | Path, name: str, size: int = 224, progress: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """All images of a dataset as uint8 (N, size, size, 3) and their table (``list_images``)."""
    from lib.storage import progress_bar as tqdm

    table = list_images(root, name)
    images = np.stack([load_image(p, size) for p in tqdm(table["path"], desc=name, disable=not progress)])
    return images, table


def load_human_trials(root: str | Path, name: str) -> pd.DataFrame:
    """Every human observer's trials of dataset ``name`` (``raw-data/<name>/*.csv``) as one table."""
    _check_name(name)
    directory = Path(root) / "raw-data" / name
    files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no human trials at {directory}/*.csv; the benchmark's raw-data/{name} folder "
                                "belongs there (bethgelab/model-vs-human, raw-data/)")
    frames = [read_trials_csv(path) for path in files]  # each file checked on its own
    trials = pd.concat(frames, ignore_index=True)
    trials = trials[trials["subj"].astype(str).str.startswith("subject-")]  # the folder may hold model results too
    trials["condition"] = trials["condition"].astype(str)
    trials["image_id"] = trials["imagename"].map(short_imagename)
    if name == "cue-conflict":
        trials["texture"] = trials["imagename"].map(texture_category)
    return trials.reset_index(drop=True)


TRIAL_COLUMNS = ("subj", "object_response", "category", "condition", "imagename")


def read_trials_csv(path: str | Path) -> pd.DataFrame:
    """One observer's CSV, its columns lower-cased; an unreadable file, one without the required columns
    (:data:`TRIAL_COLUMNS`) is an error naming the file: after a merge the other
    files' columns would hide a missing one, and its trials would silently count as wrong answers."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except Exception as error:  # noqa: BLE001 -- pandas raises several types (ParserError, UnicodeDecodeError ...)
        raise ValueError(f"human trials file {path} cannot be read as CSV ({type(error).__name__}: {error})") from error
    frame.columns = [str(c).lower() for c in frame.columns]
    missing = [c for c in TRIAL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"human trials file {path} lacks column(s) {missing}; every observer CSV needs "
                         f"{list(TRIAL_COLUMNS)} (it has {list(frame.columns)})")
    return frame


def download(name: str, root: str | Path, url: str = RELEASE_URL) -> Path:
    """Fetch and unpack dataset ``name`` from the benchmark's release into ``root/datasets`` (needs internet)."""
    import urllib.request

    _check_name(name)
    target = Path(root) / "datasets"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        archive = Path(tmp) / f"{name}.tar.gz"
        with urllib.request.urlopen(url.format(name=name)) as response, open(archive, "wb") as out:
            shutil.copyfileobj(response, out)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        unpacked = Path(tmp) / name
        if not unpacked.is_dir():
            raise RuntimeError(f"the archive of {name!r} did not contain a folder {name}/")
        if (target / name).exists():
            shutil.rmtree(target / name)
        unpacked.rename(target / name)
    return target / name
