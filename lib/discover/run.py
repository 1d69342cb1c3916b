"""Object discovery on every checkpoint of a pruning run: one forward pass per image batch, every algorithm, CorLoc.

What does not depend on the checkpoint (decoding, resizing and grouping the images) is done once;
each checkpoint then costs one batched forward pass per group of equally sized images, plus the
algorithms themselves. The checkpoint loop is the analyses' one (``lib.analysis``): with ``state_dir`` an
interrupted run resumes.

:func:`configure` checks and parses the stage's parameters once, into the :class:`DiscoverRun` that notebook 04 runs
(:func:`score`, :func:`diagnose`); the stage's check (:func:`check_stage`) is the same call before the notebook starts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lib import analysis
from lib.analysis import Scored, digest
from lib.checkpoints import iter_checkpoints, validate_source
from lib.data.boxes import BoxDataset
from lib.data.transforms import normalize, to_tensor
from lib.discover.metrics import CorLoc
from lib.discover.features import PatchFeatures
from lib.discover.methods import build_algorithms, grid_box_to_pixels
from lib.models import get_spec

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


class InputImages:
    """A dataset's images as network inputs: optionally resized (longer side = ``resize`` px), zero-padded
    after normalisation to a multiple of the feature stride (as LOST pads), grouped by padded shape."""

    def __init__(self, dataset: BoxDataset, multiple: int, resize: int | None = None, batch_size: int = 32):
        if resize is not None and resize < multiple:
            raise ValueError(f"resize={resize} is smaller than the feature stride {multiple}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.multiple, self.batch_size = multiple, batch_size
        self.images, self.factors, self.groups = [], [], defaultdict(list)
        for index in range(len(dataset)):
            image = to_tensor(dataset.image(index))  # (1, 3, H, W) in [0, 1]
            height, width = image.shape[-2:]
            if resize is not None and max(height, width) != resize:
                scale = resize / max(height, width)
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
            image = (image[0].clamp(0, 1) * 255).round().to(torch.uint8)  # kept as uint8: a quarter of the memory
            self.images.append(image)
            self.factors.append((image.shape[1] / height, image.shape[2] / width))
            self.groups[self.padded(image.shape[1:])].append(index)

    def padded(self, size) -> tuple[int, int]:
        return tuple(int(np.ceil(s / self.multiple) * self.multiple) for s in size)

    def size(self, index: int) -> tuple[int, int]:
        return tuple(self.images[index].shape[1:])

    def batches(self, mean, std):
        """Yield (indices, normalised zero-padded batch (b, 3, H, W))."""
        for shape, indices in self.groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                batch = torch.zeros(len(chunk), 3, *shape)
                for row, index in enumerate(chunk):
                    image = self.images[index]
                    batch[row, :, :image.shape[1], :image.shape[2]] = normalize(image[None].float() / 255, mean, std)[0]
                yield chunk, batch

    def to_original(self, index: int, box) -> np.ndarray:
        """A box in input pixels back in pixels of the original image."""
        factor_y, factor_x = self.factors[index]
        return np.asarray(box, dtype=np.float32) / np.array([factor_x, factor_y, factor_x, factor_y], dtype=np.float32)


@dataclass(frozen=True)
class DiscoverRun:
    """RQ2's run with every parameter checked and parsed (:func:`configure`): what notebook 04 runs (:func:`score`,
    :func:`diagnose`).

    ``dataset``: ``lib.data.boxes.load_boxes``' arguments; its images with boxes, ``n_images`` of them drawn with
    ``seed`` (None: all); ``algorithms``: {algorithm: options}; ``features``, ``compare_features``: keyword arguments
    of :class:`PatchFeatures` (the run's, and the dense checkpoint's comparison); ``resize``, ``batch_size``: the
    inputs (:class:`InputImages`); ``gallery_images`` x ``gallery_rows``: the notebook's gallery."""

    source: str
    dataset: dict
    n_images: int | None = None
    seed: int = 0
    resize: int | None = None
    features: dict = field(default_factory=dict)
    compare_features: dict = field(default_factory=dict)
    algorithms: dict = field(default_factory=lambda: {"lost": {}, "tokencut": {}})
    batch_size: int = 32
    centre_fractions: tuple = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    gallery_images: int = 6
    gallery_rows: int = 3
    state_dir: str | None = None

    def load_data(self) -> BoxDataset:
        """The images scored: the dataset's images with boxes, ``n_images`` of them drawn with ``seed``."""
        from lib.data.boxes import load_boxes

        data = load_boxes(**self.dataset).with_boxes().sample(self.n_images, seed=self.seed)
        _check_dataset(data)
        return data


def configure(source, dataset: dict, n_images: int | None = None, seed: int = 0, resize: int | None = None,
              features: dict | None = None, compare_features: dict | None = None, algorithms: dict | None = None,
              batch_size: int = 32, centre_fractions=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), gallery_images: int = 6,
              gallery_rows: int = 3, state_dir=None, exists: bool = True) -> DiscoverRun:
    """RQ2's one check and parse, before any compute: the parameters of notebook 04 as a :class:`DiscoverRun`.
    :func:`check_stage` calls it with ``exists`` False (before the notebook starts); the notebook with ``exists``
    True (``source`` is then a prune stage's output, every checkpoint the file that stage wrote) and runs what it
    returns."""
    from pathlib import Path

    from lib.data.boxes import DATASETS, voc_dir
    from lib.params import check_at_least, check_options, keys_of

    check_at_least({"n_images": n_images, "batch_size": batch_size, "gallery_images": gallery_images,
                    "gallery_rows": gallery_rows}, {"n_images": 1, "batch_size": 1, "gallery_images": 1, "gallery_rows": 1})
    dataset = dict(dataset)
    if dataset.get("name") not in DATASETS:
        raise ValueError(f"unknown box dataset {dataset.get('name')!r}; choose one of {DATASETS}")
    algorithms = dict(algorithms if algorithms is not None else {"lost": {}, "tokencut": {}})
    build_algorithms(algorithms)
    features, compare_features = dict(features or {}), dict(compare_features or {})
    for key, options in (("features", features), ("compare_features", compare_features)):
        check_options(options, keys_of(PatchFeatures.__init__, ("self", "model", "name")), key)
    if dataset["name"] in ("voc07", "voc12") and Path(dataset["root"]).exists():
        try:
            voc_dir(dataset["root"], "2007" if dataset["name"] == "voc07" else "2012")
        except FileNotFoundError as error:
            raise ValueError(f"dataset.root: {error}") from None
    if exists:
        validate_source(source)
    return DiscoverRun(str(source), dataset, n_images, seed, resize, features, compare_features, algorithms, batch_size,
                       tuple(centre_fractions), gallery_images, gallery_rows,
                       None if state_dir is None else str(state_dir))


def check_stage(p: dict) -> list[tuple]:
    """The discover stage's parameters, checked before any compute (:func:`configure`); returns the input paths it
    reads."""
    run = configure(p.get("source"), p["dataset"], p.get("n_images"), p.get("seed", 0), p.get("resize"), p["features"],
                    p["compare_features"], p["algorithms"], p["batch_size"], p.get("centre_fractions", ()),
                    p["gallery_images"], p["gallery_rows"], exists=False)
    name = run.dataset["name"]
    return [] if name == "shapes" else [("dataset.root", run.dataset["root"], "voc" if name.startswith("voc") else "boxes")]


def predict_boxes(extractor: PatchFeatures, images: InputImages, algorithms: dict, mean, std) -> dict[str, list]:
    """Every algorithm's box for every image (original pixels; None where a algorithm found nothing)."""
    n = len(images.images)
    boxes = {name: [None] * n for name in algorithms}
    grids = set()
    device = next(extractor.model.parameters()).device
    for indices, batch in images.batches(mean, std):
        feats, grid = extractor(batch.to(device))  # the algorithms run where the features are
        grids.add(grid)
        for name, algorithm in algorithms.items():
            for index, found in zip(indices, algorithm(feats, grid)):
                if found.box is not None:
                    pixels = grid_box_to_pixels(found.box, grid, batch.shape[-2:], images.size(index))
                    boxes[name][index] = images.to_original(index, pixels)
    boxes["_grids"] = sorted(grids)
    return boxes


def _check_dataset(dataset: BoxDataset) -> None:
    if not len(dataset):
        raise ValueError(f"{dataset.name} has no images")
    empty = [dataset.ids[i] for i, b in enumerate(dataset.boxes) if not len(b)]
    if empty:
        raise ValueError(f"{len(empty)} image(s) of {dataset.name} have no ground-truth box (e.g. {empty[:3]}); "
                         "CorLoc is undefined for them: use dataset.with_boxes()")


def dataset_digest(dataset: BoxDataset) -> str:
    """What a dataset is, by content: its name, ids, boxes and images (in-memory arrays, or the files' SHA-256)."""
    from lib import storage

    images = dataset.arrays if dataset.arrays is not None else [storage.file_sha256(p) for p in dataset.paths]
    return digest(dataset.name, list(map(str, dataset.ids)), *map(np.asarray, dataset.boxes), images)


def discover(source, dataset: BoxDataset, algorithms: dict | None = None, features: dict | None = None,
             resize: int | None = None, batch_size: int = 32, threshold: float = 0.5, steps=None,
             progress: bool = True, device: str | torch.device = "cpu", state_dir=None) -> tuple[list[dict], pd.DataFrame]:
    """Run every discovery algorithm on every checkpoint of ``source`` (a prune stage's output).

    algorithms: ``{"lost": {"k_patches": 100}, "tokencut": {"tau": 0.2, "eps": 1e-5}}`` (the default).
    features: keyword arguments of :class:`PatchFeatures` (``which`` for ViTs, ``dilation`` for CNNs,
    ``centre``). steps: only these checkpoint steps (default: all). device: where the features and the
    algorithms (LOST's affinities, TokenCut's batched eigenproblem) are computed. state_dir: where each
    finished checkpoint is kept, so that a rerun after an interruption resumes (``lib.analysis``).
    Returns (one row per checkpoint: step, sparsity, test_acc, corloc_<algorithm>, miou_<algorithm>,
    no_box_<algorithm>; one row per (checkpoint, image): iou_, hit_ and the box of each algorithm).
    """
    validate_source(source)
    options = algorithms if algorithms is not None else {"lost": {}, "tokencut": {}}
    build_algorithms(options)
    _check_dataset(dataset)
    return corloc(source, dataset, options, features, resize, batch_size, threshold, steps, progress, device, state_dir)


def score(run: DiscoverRun, data: BoxDataset, features: dict | None = None, steps=None, threshold: float = 0.5,
          progress: bool = True, device: str | torch.device = "cpu") -> tuple[list[dict], pd.DataFrame]:
    """:func:`discover` of a checked :class:`DiscoverRun` on ``data`` (:meth:`DiscoverRun.load_data`), with the run's
    features (or ``features``, e.g. its ``compare_features``) and only checkpoints ``steps`` (default: all)."""
    return corloc(run.source, data, run.algorithms, run.features if features is None else features, run.resize,
                  run.batch_size, threshold, steps, progress, device, run.state_dir)


def corloc(source, dataset: BoxDataset, options: dict, features, resize, batch_size, threshold, steps, progress, device,
           state_dir) -> tuple[list[dict], pd.DataFrame]:
    """:func:`discover` with its parameters already checked."""
    algorithms = build_algorithms(options)
    metric, features = CorLoc(threshold), dict(features or {})
    key = {"algorithms": options, "features": features, "resize": resize, "batch_size": batch_size,
           "threshold": threshold, "dataset": dataset_digest(dataset)}
    inputs = []  # the same inputs serve every checkpoint: made at the first one (they need its patch size)

    def score_one(record: dict, model) -> Scored:
        spec = get_spec(record["model"])
        extractor = PatchFeatures(model, record["model"], **features)
        if not inputs:
            inputs.append(InputImages(dataset, extractor.patch_size(), resize, batch_size))
        boxes = predict_boxes(extractor, inputs[0], algorithms, spec.mean, spec.std)
        grids = boxes.pop("_grids")
        row = {"step": record["step"], "sparsity": record["sparsity"], "test_acc": record.get("test_acc"),
               "n_images": len(dataset), "grid": " ".join(f"{h}x{w}" for h, w in grids)}
        frame = pd.DataFrame({"step": record["step"], "sparsity": record["sparsity"], "image": dataset.ids})
        for name in algorithms:
            scores = metric(boxes[name], dataset.boxes)
            summary = metric.summary(scores)
            row.update({f"corloc_{name}": summary["corloc"], f"miou_{name}": summary["miou"],
                        f"no_box_{name}": sum(b is None for b in boxes[name])})
            frame[f"iou_{name}"], frame[f"hit_{name}"] = scores["iou"].to_numpy(), scores["hit"].to_numpy()
            coords = np.array([b if b is not None else [np.nan] * 4 for b in boxes[name]], dtype=np.float64)
            for column, values in zip(BOX_COLUMNS, coords.T):
                frame[f"{name}_{column}"] = values
        return Scored(row, frame)

    done = analysis.score_checkpoints(source, score_one, key, state_dir, steps=steps, device=device, progress=progress)
    return done.rows, done.items


def diagnose_features(source, dataset: BoxDataset, settings: dict[str, dict], algorithms: dict | None = None,
                      resize: int | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Why LOST works or not, on the first (dense) checkpoint, for each named feature setting:
    the share of patch pairs that correlate positively (LOST's degree needs many negative pairs) and the
    share of images whose LOST seed (with the ``lost`` entry of ``algorithms``) lies inside a ground-truth box."""
    validate_source(source)
    _check_dataset(dataset)
    return lost_diagnosis(source, dataset, settings, algorithms, resize, batch_size)


def diagnose(run: DiscoverRun, data: BoxDataset) -> pd.DataFrame:
    """:func:`diagnose_features` of a checked :class:`DiscoverRun` on ``data``: its ``features`` and
    ``compare_features``."""
    return lost_diagnosis(run.source, data, {"features": run.features, "compare_features": run.compare_features},
                          run.algorithms, run.resize, run.batch_size)


def lost_diagnosis(source, dataset: BoxDataset, settings: dict[str, dict], algorithms: dict | None, resize: int | None,
                   batch_size: int) -> pd.DataFrame:
    """:func:`diagnose_features` with its parameters already checked."""
    from lib.discover.methods import LOST

    lost = LOST(**((algorithms or {}).get("lost") or {}))
    record, model = next(iter(iter_checkpoints(source)))
    spec, rows = get_spec(record["model"]), []
    for label, features in settings.items():
        extractor = PatchFeatures(model, record["model"], **features)
        images = InputImages(dataset, extractor.patch_size(), resize, batch_size)
        positive, inside = [], []
        for indices, batch in images.batches(spec.mean, spec.std):
            feats, grid = extractor(batch)
            affinity = feats @ feats.transpose(1, 2)
            n = affinity.shape[1]
            positive += (((affinity > 0).sum((1, 2)) - (affinity.diagonal(dim1=1, dim2=2) > 0).sum(1)) / (n * n - n)).tolist()
            for index, found in zip(indices, lost(feats, grid)):
                row, col = divmod(found.seed, grid[1])
                centre = grid_box_to_pixels((col + 0.5, row + 0.5, col + 0.5, row + 0.5), grid, batch.shape[-2:],
                                            images.size(index))
                x, y = images.to_original(index, centre)[:2]
                truth = dataset.boxes[index]
                inside.append(bool(((truth[:, 0] <= x) & (x < truth[:, 2]) & (truth[:, 1] <= y) & (y < truth[:, 3])).any()))
        rows.append({"features": label, "settings": str(features), "positive_pairs": float(np.mean(positive)),
                     "lost_seed_in_box": float(np.mean(inside))})
    return pd.DataFrame(rows)
