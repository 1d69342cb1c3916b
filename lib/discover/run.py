"""Object discovery on every checkpoint of a pruning run: one forward pass per image batch, every algorithm, CorLoc.

What does not depend on the checkpoint (decoding, resizing and grouping the images) is done once;
each checkpoint then costs one batched forward pass per group of equally sized images, plus the
algorithms themselves. The checkpoint loop is the analyses' one (``lib.analysis``): with ``state_dir`` an
interrupted run resumes.
"""

from __future__ import annotations

from collections import defaultdict

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


def check_stage(p: dict) -> list[tuple]:
    """The discover stage's parameters, checked before any compute; returns the input paths it reads."""
    from pathlib import Path

    from lib.data.boxes import DATASETS, voc_dir
    from lib.params import check_at_least, check_options, keys_of

    check_at_least(p, {"n_images": 1, "batch_size": 1, "gallery_images": 1, "gallery_rows": 1})
    dataset = dict(p["dataset"])
    if dataset.get("name") not in DATASETS:
        raise ValueError(f"unknown box dataset {dataset.get('name')!r}; choose one of {DATASETS}")
    build_algorithms(p["algorithms"])
    for key in ("features", "compare_features"):
        check_options(p[key], keys_of(PatchFeatures.__init__, ("self", "model", "name")), key)
    if dataset["name"] in ("voc07", "voc12") and Path(dataset["root"]).exists():
        try:
            voc_dir(dataset["root"], "2007" if dataset["name"] == "voc07" else "2012")
        except FileNotFoundError as error:
            raise ValueError(f"dataset.root: {error}") from None
    kind = "voc" if dataset["name"].startswith("voc") else "boxes"
    return [] if dataset["name"] == "shapes" else [("dataset.root", dataset["root"], kind)]


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
    algorithms = build_algorithms(options)
    _check_dataset(dataset)
    metric, features = CorLoc(threshold), dict(features or {})
    key = {"algorithms": options, "features": features, "resize": resize, "batch_size": batch_size,
           "threshold": threshold, "dataset": dataset_digest(dataset)}
    inputs = []  # the same inputs serve every checkpoint: made at the first one (they need its patch size)

    def score(record: dict, model) -> Scored:
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

    done = analysis.score_checkpoints(source, score, key, state_dir, steps=steps, device=device, progress=progress)
    return done.rows, done.items


def diagnose_features(source, dataset: BoxDataset, settings: dict[str, dict], algorithms: dict | None = None,
                      resize: int | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Why LOST works or not, on the first (dense) checkpoint, for each named feature setting:
    the share of patch pairs that correlate positively (LOST's degree needs many negative pairs) and the
    share of images whose LOST seed (with the ``lost`` entry of ``algorithms``) lies inside a ground-truth box."""
    from lib.discover.methods import LOST

    validate_source(source)
    _check_dataset(dataset)
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
