"""Ground-truth object masks for scoring attribution maps (RQ1): the embedded dataset, PASCAL VOC, COCO.

Every loader returns what ``lib.data.shapes.load_split`` does for the fields RQ1 needs::

    images  uint8 (N, S, S, 3)
    masks   bool  (N, S, S)     the binary foreground: union of every object in the image
    ids     str   (N,)          image ids (file stems, or indices for the embedded data)
    labels  int64 (N,)          only for the embedded data (real images are scored for the predicted class)

Real images are resized so that their shorter side is ``image_size`` and centre-cropped to a square (the
usual evaluation transform); the mask goes through the same geometry with nearest-neighbour sampling.
Images whose foreground is empty after cropping are skipped (the scores are undefined there).

PASCAL VOC (``SegmentationClass/<id>.png``) stores class ids as the *indices* of a palette image:
0 background, 1-20 the object classes, 255 "void" (object outlines and unlabelled regions). The
foreground is every id other than 0 and 255. Study A's released code instead reads the PNG as RGB and
thresholds the red channel of the palette colour, which drops whole classes (those whose palette colour
has red 0 or 64: bicycle, boat, bus, cat, cow, dog, motorbike, potted plant, sofa, tv monitor) and counts the
void outline as object; we read the ids. ``mask="red_channel"`` reproduces Study A's mask
(:func:`voc_red_channel`) for a faithful run; ``mask="foreground"`` (the default) is the binary foreground.

COCO, in the layout of ``coco128/semantic_segmentation`` (single-channel PNGs of panoptic category ids,
0 = unlabelled): the foreground is the union of the *thing* categories (COCO ids 1-91, every object
class); stuff categories (ids 92-200: sky, wall, grass, ...) and unlabelled pixels are background, as
VOC's background is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VOC_BACKGROUND, VOC_VOID = 0, 255
COCO_MAX_THING_ID = 91  # COCO panoptic: ids 1..90 are things ("isthing"), 92..200 stuff


def voc_foreground(class_ids: np.ndarray) -> np.ndarray:
    """Binary foreground of a VOC class-id map: ids other than 0 (background) and 255 (void)."""
    class_ids = np.asarray(class_ids)
    if class_ids.ndim != 2:
        raise ValueError(f"a VOC class map is 2-d (read the palette PNG's indices, not RGB); "
                         f"got shape {class_ids.shape}")
    return (class_ids != VOC_BACKGROUND) & (class_ids != VOC_VOID)


MASK_MODES = ("foreground", "red_channel")


def read_red_channel(path: str | Path) -> np.ndarray:
    """The red channel of a segmentation PNG's colours (its palette colours for VOC), as Study A's code reads it."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))[..., 0]


def voc_red_channel(red: np.ndarray) -> np.ndarray:
    """Study A's ground truth: the red channel min-max normalised over the image, thresholded at 0.5
    (``explainations_evaluation_metrics.py``: ``(gt - min) / (max - min) >= .5``). With VOC's palette this keeps
    the classes whose colour has red 128 or 192 and the void outline (224), drops those with red 0 or 64, and is
    empty where the red channel is constant."""
    red = np.asarray(red, dtype=np.float64)
    if red.ndim != 2:
        raise ValueError(f"expected the 2-d red channel of a mask image, got shape {red.shape}")
    low, high = red.min(), red.max()
    if high == low:  # Study A's division by zero gives NaN, and NaN >= 0.5 is False
        return np.zeros(red.shape, dtype=bool)
    return (red - low) / (high - low) >= 0.5


def coco_foreground(category_ids: np.ndarray) -> np.ndarray:
    """Binary foreground of a COCO semantic map: the union of all thing (object) categories."""
    category_ids = np.asarray(category_ids)
    if category_ids.ndim != 2:
        raise ValueError(f"a COCO semantic mask is 2-d; got shape {category_ids.shape}")
    return (category_ids >= 1) & (category_ids <= COCO_MAX_THING_ID)


def read_class_map(path: str | Path) -> np.ndarray:
    """The class ids of a segmentation PNG: a palette ('P') or grey ('L') image's values, never its colours."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{path} is a {image.mode} image; a class-id mask must be palette or single-channel")
        return np.array(image)


def square_crop(image: Image.Image, size: int, resample) -> Image.Image:
    """Resize so the shorter side is ``size``, then centre-crop to size x size."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_pairs(pairs, foreground, image_size: int, limit: int | None = None, progress: bool = False,
               read=read_class_map) -> dict:
    """Images and binary masks from (id, image path, mask path) triples, resized and cropped to ``image_size``.

    ``read``: the mask file's reader (class ids by default), ``foreground``: its array -> binary mask."""
    from lib.storage import progress_bar as tqdm

    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    images, masks, ids = [], [], []
    for image_id, image_path, mask_path in tqdm(pairs, desc="masks", disable=not progress, leave=False):
        if limit is not None and len(ids) >= limit:
            break
        mask = foreground(read(mask_path))
        with Image.open(image_path) as image:
            image = image.convert("RGB")
            if image.size != mask.shape[::-1]:
                raise ValueError(f"{image_path} is {image.size} but its mask {mask_path} is {mask.shape[::-1]} (w, h)")
            image = square_crop(image, image_size, Image.BILINEAR)
        mask = np.array(square_crop(Image.fromarray(mask.astype(np.uint8) * 255), image_size, Image.NEAREST)) > 127
        if not mask.any():
            continue
        images.append(np.array(image, dtype=np.uint8))
        masks.append(mask)
        ids.append(str(image_id))
    if not ids:
        raise ValueError("no image with a non-empty foreground mask was found")
    return {"images": np.stack(images), "masks": np.stack(masks), "ids": np.array(ids)}


def load_voc_segmentation(voc_dir: str | Path, split: str = "val", image_size: int = 224, limit: int | None = None,
                          progress: bool = False, mask: str = "foreground") -> dict:
    """VOC segmentation images of ``split`` with their binary foreground masks.

    voc_dir: a ``VOCdevkit/VOC<year>`` directory (``lib.data.download.download_voc(root, "2012")`` returns one).
    mask: ``foreground`` (class ids other than 0 and 255) or ``red_channel`` (Study A's mask, :func:`voc_red_channel`).
    """
    if mask not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mask!r}; choose one of {MASK_MODES}")
    voc_dir = Path(voc_dir)
    listing = voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} is missing: voc_dir must be a VOCdevkit/VOC<year> directory with "
                                "segmentations; get one with lib.data.download.download_voc(root, '2012')")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    pairs = [(n, voc_dir / "JPEGImages" / f"{n}.jpg", voc_dir / "SegmentationClass" / f"{n}.png") for n in names]
    if mask == "red_channel":
        return load_pairs(pairs, voc_red_channel, image_size, limit, progress, read=read_red_channel)
    return load_pairs(pairs, voc_foreground, image_size, limit, progress)


def load_coco_semantic(root: str | Path, split: str = "val2017", image_size: int = 224, limit: int | None = None,
                       progress: bool = False, mask: str = "foreground") -> dict:
    """COCO images with the union of their object masks, from the coco128 layout:
    ``root/images/<split>/<id>.jpg`` and ``root/semantic_segmentation/masks/<split>/<id>.png``.

    ``mask="red_channel"``: Study A's reading of a mask file (:func:`voc_red_channel`) applied to these grey
    category-id maps, whose red channel is the id itself: pixels in the upper half of an image's id range,
    mostly *stuff* (ids 92-200), count as object. It measures what that code does to data it was not written
    for, beside the correct mask; it is no object mask."""
    root = Path(root)
    mask_dir, image_dir = root / "semantic_segmentation" / "masks" / split, root / "images" / split
    if not mask_dir.is_dir() or not image_dir.is_dir():
        raise FileNotFoundError(f"expected {image_dir} and {mask_dir} (the coco128 semantic_segmentation layout)")
    pairs = [(p.stem, image_dir / f"{p.stem}.jpg", p) for p in sorted(mask_dir.glob("*.png"))]
    if mask == "red_channel":
        return load_pairs(pairs, voc_red_channel, image_size, limit, progress, read=read_red_channel)
    return load_pairs(pairs, coco_foreground, image_size, limit, progress)


def load_shapes_masks(root: str | Path, split: str = "test", limit: int | None = None) -> dict:
    """The embedded dataset's images and exact object masks (first ``limit`` images of ``split``)."""
    from lib.data.shapes import load_split

    arrays = load_split(root, split)
    keep = slice(0, limit)
    return {"images": arrays["images"][keep], "masks": arrays["masks"][keep], "labels": arrays["labels"][keep],
            "ids": np.array([f"{split}_{i:05d}" for i in range(len(arrays["labels"]))])[keep]}


DATASETS = ("shapes", "voc12", "coco")  # the names lib.data.boxes gives the same data


def load_ground_truth(dataset: str, root: str | Path, split: str | None = None, limit: int | None = None,
                      image_size: int = 224, progress: bool = False, mask: str = "foreground") -> dict:
    """Dispatch: ``shapes`` (embedded, split "test"), ``voc12`` (the VOC2012 dir, split "val") or ``coco`` ("val2017").

    ``image_size`` applies to the real datasets (the embedded images keep their size). ``mask``: ``foreground``,
    or for VOC and COCO ``red_channel`` (Study A's reading of the mask file; see the module docstring).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    if mask not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mask!r}; choose one of {MASK_MODES}")
    if mask != "foreground" and dataset not in ("voc12", "coco"):
        raise ValueError(f"mask {mask!r} reads a mask file's colours as Study A's code does (voc12, coco); dataset "
                         f"{dataset!r} has exact masks: use mask 'foreground'")
    if dataset == "shapes":
        return load_shapes_masks(root, split or "test", limit)
    if dataset == "voc12":
        return load_voc_segmentation(root, split or "val", image_size, limit, progress, mask)
    if dataset == "coco":
        return load_coco_semantic(root, split or "val2017", image_size, limit, progress, mask)
    raise ValueError(f"unknown ground-truth dataset {dataset!r}; choose one of {DATASETS}")
