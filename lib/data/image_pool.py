"""A pool of images held in memory, the population the unit-interpretability analyses rank.

Two sources:

- a split of the embedded dataset: ``{"split": "test", "limit": 500}`` (read from ``data_dir``);
- a folder of image files: ``{"folder": "../shared/data/imagenet-sample-images", "image_size": 224,
  "labels": "order"}``. Images are resized (short side to ``image_size / crop``) and centre-cropped to
  ``image_size``, the standard ImageNet evaluation transform. ``labels``: ``None``; ``"order"`` (the
  index in sorted file-name order: the ImageNet sample images are one per class in class order); or
  ``"folders"`` (the index of the sorted sub-folder an image lies in).

``limit`` keeps a seeded random subset (in the original order), never the first images: a folder
sorted by class would otherwise give a pool of a few classes only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lib.data.transforms import normalize, to_tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
POOL_KEYS = {"split", "folder", "limit", "seed", "image_size", "crop", "labels"}


@dataclass
class ImagePool:
    """uint8 images (N, H, W, 3) of one size, their names and (optionally) class labels."""

    images: np.ndarray
    names: list[str]
    labels: np.ndarray | None = None
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"pool images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.names) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.names)} names")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def fingerprint(self) -> str:
        """Hash of the pixels (and their shape): what an image embedding depends on."""
        if self._fingerprint is None:
            digest = hashlib.sha256(str(self.images.shape).encode())
            digest.update(np.ascontiguousarray(self.images).data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def batches(self, batch_size: int = 128, mean=None, std=None, size: int | None = None) -> Iterator[torch.Tensor]:
        """Float (B, 3, H, W) batches in [0, 1] (normalised when ``mean``/``std`` are given, resized to ``size``)."""
        for start in range(0, len(self), batch_size):
            x = to_tensor(self.images[start:start + batch_size])
            if size is not None and size != x.shape[-1]:
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                    align_corners=False).clamp_(0, 1)
            yield normalize(x, mean, std) if mean is not None else x


def from_shapes(root: str | Path, split: str = "test", limit: int | None = None, seed: int = 0) -> ImagePool:
    """A split of the embedded dataset (labels included)."""
    from lib.data import shapes

    arrays = shapes.load_split(root, split)
    keep = _subset(len(arrays["labels"]), limit, seed)
    return ImagePool(arrays["images"][keep], [f"{split}/{i:05d}" for i in keep], arrays["labels"][keep],
                     source=f"shapes:{Path(root).as_posix()}:{split}")


def from_folder(folder: str | Path, image_size: int = 224, crop: float = 0.875, labels: str | None = None,
                limit: int | None = None, seed: int = 0) -> ImagePool:
    """Every image file under ``folder`` (sorted by path), resized and centre-cropped to ``image_size``."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; check the pool's 'folder' parameter")
    if labels not in (None, "order", "folders"):
        raise ValueError(f"labels must be None, 'order' or 'folders', got {labels!r}")
    if not 0 < crop <= 1:
        raise ValueError(f"crop must be in (0, 1], got {crop}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    if labels == "folders":
        classes = sorted({p.parent for p in paths})
        all_labels = np.array([classes.index(p.parent) for p in paths], dtype=np.int64)
    else:
        all_labels = np.arange(len(paths), dtype=np.int64) if labels == "order" else None
    keep = _subset(len(paths), limit, seed)
    from lib import storage

    storage.verify_images([paths[i] for i in keep], f"pool {folder}")
    resize = round(image_size / crop)
    images = np.stack([_load_square(paths[i], resize, image_size, Image) for i in keep])
    return ImagePool(images, [paths[i].relative_to(folder).as_posix() for i in keep],
                     None if all_labels is None else all_labels[keep], source=f"folder:{folder.as_posix()}")


def load_pool(spec: dict, data_dir: str | Path | None = None) -> ImagePool:
    """A pool from its parameters (see the module docstring); ``data_dir`` is the embedded dataset's."""
    unknown = set(spec) - POOL_KEYS
    if unknown:
        raise ValueError(f"unknown pool parameter(s) {sorted(unknown)}; known: {sorted(POOL_KEYS)}")
    if ("folder" in spec) == ("split" in spec):
        raise ValueError(f"a pool needs exactly one of 'folder' (image files) or 'split' (embedded dataset), got {spec}")
    common = {"limit": spec.get("limit"), "seed": spec.get("seed", 0)}
    if "folder" in spec:
        return from_folder(spec["folder"], spec.get("image_size", 224), spec.get("crop", 0.875), spec.get("labels"),
                           **common)
    if data_dir is None:
        raise ValueError("a pool from the embedded dataset needs data_dir (the dataset's directory)")
    extra = set(spec) & {"image_size", "crop", "labels"}
    if extra:
        raise ValueError(f"{sorted(extra)} apply to folder pools only; the embedded dataset has its own size and labels")
    return from_shapes(data_dir, spec["split"], **common)


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"pool limit must be positive, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _load_square(path: Path, resize: int, size: int, Image) -> np.ndarray:
    try:
        return _decode_square(path, resize, size, Image)
    except OSError as error:  # truncated or corrupt: name the file
        from lib import storage

        raise storage.image_error(path, error) from error


def _decode_square(path: Path, resize: int, size: int, Image) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resize / min(image.size)
        w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((w, h), Image.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
