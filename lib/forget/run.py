"""What pruning forgets, end to end: every seed's checkpoints predict every evaluation image, then the population
measures of ``lib.forget.metrics``.

One run per (arch, plan) reads the prune output of every seed (:func:`seed_dir`), scores each seed's checkpoints on
the analyses' loop (``lib.analysis.score_checkpoints``: resumable per checkpoint with ``state_dir``, kept by the
checkpoint's content and the inputs' digest) and keeps one row per (seed, checkpoint, image). The predictions are
all it computes (one forward pass per image and checkpoint); everything else is counted from them.

:func:`configure` checks and parses the stage's parameters once, into the :class:`ForgetRun` that notebook 08 runs
(:func:`measure`); the stage's check (:func:`check_stage`) is the same call before the notebook starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import analysis
from lib.analysis import Scored, digest
from lib.checkpoints import validate_source
from lib.forget.methods import MIN_POPULATION, predict
from lib.forget.metrics import checkpoint_rows, class_changes, most_forgotten, per_image
from lib.results import list_checkpoints

CORRECTIONS = ("holm", "bh")


def seed_dir(folder: str | Path, seed: int) -> Path:
    """The output folder of one seed's run of a stage whose (arch, plan) folder is ``folder``
    (``data/prune/cnn/lrr`` -> ``data/prune/cnn/lrr/seed0``: ``lib.pipeline.output_dir``'s layout)."""
    return Path(folder) / f"seed{seed}"


@dataclass(frozen=True)
class ForgetRun:
    """A forget stage's run with every parameter checked and parsed (:func:`configure`): what notebook 08 runs
    (:func:`measure`).

    ``source``: the prune stage's (arch, plan) folder, each seed's run at :func:`seed_dir`; ``dataset``, ``split``,
    ``n_images``: the images predicted (``lib.data.datasets.classification_data``; None: every image of the split);
    ``correction``, ``alpha``: the per-class tests (``lib.stats.adjust``); ``gallery_size``: the most forgotten images
    kept; ``interpret_dir``, ``discover_dir``: the other stages' (arch, plan) folders joined (None: not joined)."""

    source: str
    seeds: tuple[int, ...]
    dataset: dict
    split: str = "test"
    n_images: int | None = None
    batch_size: int = 256
    correction: str = "holm"
    alpha: float = 0.05
    gallery_size: int = 12
    interpret_dir: str | None = None
    discover_dir: str | None = None
    device: str | None = "cpu"
    state_dir: str | None = None


def configure(source, seeds, dataset: dict, split: str = "test", n_images: int | None = None, batch_size: int = 256,
              correction: str = "holm", alpha: float = 0.05, gallery_size: int = 12, interpret_dir=None,
              discover_dir=None, device: str | None = "cpu", state_dir=None, exists: bool = True) -> ForgetRun:
    """The forget stage's one check and parse, before any compute: the parameters of notebook 08 as a
    :class:`ForgetRun`. :func:`check_stage` calls it with ``exists`` False (before the notebook starts); the notebook
    (and :func:`forget`) with ``exists`` True (every seed's prune run there, each checkpoint the file that stage
    wrote) and runs what it returns."""
    from lib.data.datasets import DATASETS

    if not isinstance(seeds, (list, tuple)) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                    for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers (params.yaml `seeds`), got {seeds!r}")
    if not isinstance(dataset, dict) or dataset.get("name", "shapes") not in DATASETS or "root" not in dataset:
        raise ValueError(f"dataset must be {{name, root, ...}} with a name of {sorted(DATASETS)}, got {dataset!r}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test (the classification loader's splits), got {split!r}")
    if n_images is not None and (not isinstance(n_images, int) or n_images < 1):
        raise ValueError(f"n_images must be a positive integer or null (every image), got {n_images!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS} (lib.stats.adjust), got {correction!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if batch_size < 1 or gallery_size < 0:
        raise ValueError(f"batch_size must be >= 1 and gallery_size >= 0, got {batch_size}, {gallery_size}")
    if exists:
        for seed in seeds:
            validate_source(seed_dir(source, seed))
    return ForgetRun(str(source), tuple(seeds), dict(dataset), split, n_images, batch_size, correction, alpha,
                     gallery_size, None if interpret_dir is None else str(interpret_dir),
                     None if discover_dir is None else str(discover_dir), device,
                     None if state_dir is None else str(state_dir))


def check_stage(p: dict) -> list[tuple]:
    """The forget stage's parameters, checked before any compute (:func:`configure`); returns the input paths it
    reads."""
    from lib.data.datasets import dataset_paths

    run = configure(p.get("source"), p["seeds"], p["dataset"], p["split"], p["n_images"], p["batch_size"],
                    p["correction"], p["alpha"], p["gallery_size"], p.get("interpret_dir"), p.get("discover_dir"),
                    p.get("device"), exists=False)
    return [] if run.dataset.get("name", "shapes") == "shapes" else dataset_paths(run.dataset)


@dataclass
class Forgetting:
    """What a run produced.

    predictions: one row per (seed, step, image); images: one per (step, image) (``lib.forget.metrics.per_image``);
    classes: one per (pruned step, class); rows: one per step (the stage's ``metrics.json``); seeds: the seeds
    read; population: whether PIEs are defined (at least ``MIN_POPULATION`` seeds); ids, pictures: the
    ``gallery_size`` most forgotten images (``most_forgotten``) and those images as uint8 (N, H, W, 3).
    """

    predictions: pd.DataFrame
    images: pd.DataFrame
    classes: pd.DataFrame
    rows: list[dict]
    seeds: list[int]
    population: bool
    ids: np.ndarray = field(default_factory=lambda: np.array([]))
    pictures: np.ndarray | None = None


def model_of(source) -> str:
    """The model name of a prune run's first checkpoint (read without building the model)."""
    from lib import storage

    return storage.load_torch(list_checkpoints(source)[0]["path"])["model"]["name"]


def load_images(dataset: dict, split: str, n_images: int | None, model: str):
    """(the first ``n_images`` images of a classification dataset's ``split``, normalised for ``model``, as a torch
    dataset of (image, label); their ids ``<split>_<index:05d>``; a digest naming them) through
    ``lib.data.datasets.classification_data``, what training and pruning read. The digest is the images' and
    labels' content where the loader holds them in memory (the embedded data), else the dataset's parameters."""
    from lib.data.datasets import classification_data
    from lib.models import get_spec

    spec = get_spec(model)
    data = classification_data(dataset, spec.mean, spec.std)[split]
    count = len(data) if n_images is None else min(n_images, len(data))
    images, labels = getattr(data, "images", None), getattr(data, "labels", None)
    if torch.is_tensor(images) and torch.is_tensor(labels):
        name = digest(images[:count], labels[:count])
    else:
        name = digest(dataset, split, count, type(data).__name__)
    ids = np.array([f"{split}_{i:05d}" for i in range(count)])
    return torch.utils.data.Subset(data, range(count)), ids, name


def class_names(dataset: dict) -> list[str] | None:
    """The class names of a classification dataset where it records them (the embedded data's ``meta.json``)."""
    if dataset.get("name", "shapes") != "shapes":
        return None
    from lib.data.shapes import load_meta

    return list(load_meta(dataset["root"])["classes"])


def pictures_of(data, indices, model: str) -> np.ndarray:
    """Images ``indices`` of ``data`` (network inputs) back as uint8 (N, H, W, 3), for the gallery."""
    from lib.models import get_spec

    spec = get_spec(model)
    inputs = torch.stack([data[int(i)][0] for i in indices]) if len(indices) else data[0][0][None, :, :, :][:0]
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    return ((inputs * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def predict_checkpoints(source, data, ids: np.ndarray, name: str, seed: int, batch_size: int = 256,
                        device: str | None = "cpu", state_dir=None, progress: bool = True) -> analysis.Checkpoints:
    """Every checkpoint of one seed's prune run predicts every image of ``data``: one row per (checkpoint, image).
    ``name``: the digest of the images (the kept state's key)."""
    key = {"batch_size": batch_size, "images": name, "ids": digest(list(map(str, ids)))}

    def score(record: dict, model) -> Scored:
        from lib.models import get_spec

        cnn = get_spec(record["model"]).family == "cnn"
        prediction, confidence, labels = predict(model, data, batch_size,
                                                 torch.channels_last if cnn else torch.contiguous_format)
        frame = pd.DataFrame({"seed": seed, "step": record["step"], "sparsity": record["sparsity"], "image": ids,
                              "label": labels, "prediction": prediction, "confidence": confidence})
        frame["correct"] = (frame["prediction"] == frame["label"]).astype(float)
        row = {"step": record["step"], "sparsity": record["sparsity"], "test_acc": record.get("test_acc"),
               "acc": float(frame["correct"].mean())}
        return Scored(row, frame)

    return analysis.score_checkpoints(source, score, key, state_dir, device=device, progress=progress,
                                      desc=f"seed {seed}")


def forget(source, seeds, dataset: dict, split: str = "test", n_images: int | None = None, batch_size: int = 256,
           correction: str = "holm", alpha: float = 0.05, gallery_size: int = 12, device: str | None = "cpu",
           state_dir=None, progress: bool = True) -> Forgetting:
    """Predict every image with every seed's checkpoints of ``source`` (a prune stage's (arch, plan) folder; each
    seed's run at :func:`seed_dir`) and measure what pruning forgets (``lib.forget.metrics``).

    state_dir: each seed's finished checkpoints are kept in ``<state_dir>/seed<k>``, so that a rerun resumes.
    :func:`configure`, then :func:`measure`.
    """
    return measure(configure(source, seeds, dataset, split, n_images, batch_size, correction, alpha, gallery_size,
                             device=device, state_dir=state_dir), progress)


def measure(run: ForgetRun, progress: bool = True) -> Forgetting:
    """What pruning forgets, for a checked :class:`ForgetRun` (see :func:`forget`)."""
    source, seeds, state_dir = run.source, list(run.seeds), run.state_dir
    sources = {seed: seed_dir(source, seed) for seed in seeds}
    models = {seed: model_of(path) for seed, path in sources.items()}
    if len(set(models.values())) > 1:
        raise ValueError(f"source: the seeds' prune runs hold different models {models}; a population is one "
                         "architecture")
    model = models[seeds[0]]
    data, ids, name = load_images(run.dataset, run.split, run.n_images, model)
    frames, records = [], {}
    for seed, path in sources.items():
        done = predict_checkpoints(path, data, ids, name, seed, run.batch_size, run.device,
                                   None if state_dir is None else Path(state_dir) / f"seed{seed}", progress)
        frames.append(done.items)
        for row in done.rows:
            records.setdefault(row["step"], []).append(row)
    predictions = pd.concat(frames, ignore_index=True)
    images = per_image(predictions)
    classes = class_changes(predictions, run.correction, run.alpha)
    means = {step: {"test_acc": _mean([r.get("test_acc") for r in rows])} for step, rows in records.items()}
    rows = checkpoint_rows(images, classes, means)
    shown = most_forgotten(images, run.gallery_size)["image"].tolist()
    index = {image: i for i, image in enumerate(ids)}
    return Forgetting(predictions, images, classes, rows, list(seeds), len(seeds) >= MIN_POPULATION,
                      np.array(shown), pictures_of(data, [index[i] for i in shown], model))


def _mean(values) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def read_items(folder, seeds, items: str = "per_image.csv") -> pd.DataFrame | None:
    """Another stage's per-item tables of every seed (``<seed_dir>/<items>``), one table with a ``seed`` column;
    None when a seed's table is missing (the stage has not run)."""
    frames = []
    for seed in seeds:
        path = seed_dir(folder, seed) / items
        if not path.is_file():
            return None
        frame = pd.read_csv(path)
        frames.append(frame.assign(seed=seed) if "seed" not in frame else frame)
    return pd.concat(frames, ignore_index=True) if frames else None


# Per-image columns of the other stages that the join takes: RQ1's localisation scores, RQ2's hits.
JOINED = {"interpret": ("rma_", "rra_"), "discover": ("hit_",)}


def across_dimensions(images: pd.DataFrame, folders: dict, seeds) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Forget's per-image table joined with the per-image tables of the stages in ``folders`` ({stage: its
    (arch, plan) folder, or None}), and the forgotten-against-kept comparison of every joined column
    (``lib.forget.metrics``). Returns (joined, comparison, the stages joined); a stage whose table is missing is
    left out (and not named)."""
    from lib.forget.metrics import compare_forgotten, join_dimensions

    tables, columns = {}, {}
    for stage, folder in folders.items():
        items = read_items(folder, seeds) if folder else None
        if items is not None:
            tables[stage] = items
            columns[stage] = [c for c in items.columns if c.startswith(JOINED.get(stage, ()))]
    joined = join_dimensions(images, tables, columns)
    compare = compare_forgotten(joined, [f"{s}:{c}" for s, cols in columns.items() for c in cols])
    return joined, compare, list(tables)


def save_tables(out_dir, **tables: pd.DataFrame) -> list[Path]:
    """Write each table as ``<out_dir>/<name>.csv``, atomically (``lib.storage``)."""
    import io

    from lib import storage

    paths = []
    for name, table in tables.items():
        buffer = io.StringIO()
        table.to_csv(buffer, index=False)
        paths.append(storage.write_bytes(Path(out_dir) / f"{name}.csv", buffer.getvalue().encode()))
    return paths
