"""Ground-truth object boxes for unsupervised object discovery, read from each dataset's own format.

Every loader returns a :class:`BoxDataset`: one entry per image, its boxes as float32 ``(n, 4)``
arrays ``[x0, y0, x1, y1)`` in pixels of the original image (x1/y1 exclusive, the embedded
dataset's convention), so a box covering a whole W x H image is ``[0, 0, W, H]``.

- ``shapes``: the embedded dataset (``lib.data.shapes``), one box per image.
- ``voc07`` / ``voc12``: PASCAL VOC XML (``Annotations/<id>.xml``, ``ImageSets/Main/<split>.txt``).
  VOC coordinates are 1-based and inclusive, so ``xmin=1, xmax=W`` becomes ``[0, W)``: x0 = xmin - 1,
  x1 = xmax (what LOST does). ``remove_hards`` drops truncated and difficult objects and then the
  images left with none (LOST's ``--no_hard`` setting). ``download=True`` fetches VOC first.
- ``coco``: YOLO txt labels (``class cx cy w h``, normalised to the image size), the layout of
  ``lightly-ai/coco128_yolo``: ``images/<split>``, ``object_detection/labels/<split>``.
- ``tiny_imagenet``: Tiny ImageNet's ``val/val_annotations.txt`` (file, wnid, x0, y0, x1, y1), whose
  coordinates are 0-based and inclusive (the largest is 63 in 64-px images): x1 = x1 + 1.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATASETS = ("shapes", "voc07", "voc12", "coco", "tiny_imagenet")  # lib.data.masks: the same names
VOC_SPLITS = ("train", "val", "trainval", "test")


@dataclass
class BoxDataset:
    """Images (files or an in-memory uint8 array) with their ground-truth boxes and class names."""

    name: str
    ids: list[str]
    boxes: list[np.ndarray]
    classes: list[list[str]]
    paths: list[Path] | None = None
    arrays: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if (self.paths is None) == (self.arrays is None):
            raise ValueError("a BoxDataset needs exactly one of paths (image files) or arrays (uint8 N x H x W x 3)")
        images = self.paths if self.paths is not None else self.arrays
        if not len(self.ids) == len(self.boxes) == len(self.classes) == len(images):
            raise ValueError(f"{self.name}: {len(self.ids)} ids, {len(self.boxes)} box sets, {len(self.classes)} "
                             f"class lists and {len(images)} images must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> np.ndarray:
        """The image as uint8 (H, W, 3) RGB (grey-scale files are converted)."""
        if self.arrays is not None:
            return self.arrays[index]
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return np.asarray(image.convert("RGB"))

    def size(self, index: int) -> tuple[int, int]:
        """(height, width) of an image (a file's header only is read)."""
        if self.arrays is not None:
            return tuple(self.arrays.shape[1:3])
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return image.size[1], image.size[0]

    def subset(self, indices) -> "BoxDataset":
        indices = [int(i) for i in indices]
        return BoxDataset(self.name, [self.ids[i] for i in indices], [self.boxes[i] for i in indices],
                          [self.classes[i] for i in indices],
                          paths=None if self.paths is None else [self.paths[i] for i in indices],
                          arrays=None if self.arrays is None else self.arrays[indices])

    def sample(self, n: int | None, seed: int = 0) -> "BoxDataset":
        """``n`` images drawn without replacement (kept in dataset order); all of them when n is None."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"n must be positive or None (all images), got {n}")
        return self.subset(np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False)))

    def with_boxes(self) -> "BoxDataset":
        """The images that have at least one ground-truth box (CorLoc is undefined without one)."""
        return self.subset([i for i, b in enumerate(self.boxes) if len(b)])


def _box_array(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


# ----------------------------------------------------------------------------- the embedded dataset
def load_shapes(root: str | Path, split: str = "test") -> BoxDataset:
    from lib.data import shapes

    arrays = shapes.load_split(root, split)
    names = shapes.load_meta(root)["classes"]
    return BoxDataset(f"shapes/{split}", [f"{split}_{i}" for i in range(len(arrays["labels"]))],
                      [_box_array(b) for b in arrays["boxes"]], [[names[int(c)]] for c in arrays["labels"]],
                      arrays=arrays["images"])


# ----------------------------------------------------------------------------- PASCAL VOC
def voc_dir(root: str | Path, year: str) -> Path:
    """The ``VOC<year>`` folder under ``root`` (root itself, root/VOC<year> or root/VOCdevkit/VOC<year>)."""
    root = Path(root)
    candidates = [root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"]
    for candidate in candidates:
        if (candidate / "Annotations").is_dir() and (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise FileNotFoundError(
        f"PASCAL VOC {year} not found: none of {[str(c) for c in candidates]} holds Annotations/ and "
        "ImageSets/Main/. Point root at the folder holding VOCdevkit, or pass download=True to fetch it."
    )


def parse_voc_xml(path: str | Path, remove_hards: bool = False) -> tuple[np.ndarray, list[str]]:
    """Boxes (float32 (n, 4), [x0, y0, x1, y1) pixels) and class names of one VOC annotation file."""
    boxes, names = [], []
    for obj in ET.parse(path).getroot().iter("object"):
        hard = obj.findtext("truncated", "0").strip() == "1" or obj.findtext("difficult", "0").strip() == "1"
        if remove_hards and hard:
            continue
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{path}: an <object> has no <bndbox>")
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])  # 1-based inclusive -> 0-based, end exclusive
        names.append(obj.findtext("name").strip())
    return _box_array(boxes), names


def load_voc(root: str | Path, year: str = "2007", split: str = "trainval", remove_hards: bool = False,
             download: bool = False) -> BoxDataset:
    """PASCAL VOC ``year`` (2007 or 2012) ``split`` from a local root, or fetched first with ``download=True``."""
    year = str(year)
    if year not in ("2007", "2012"):
        raise ValueError(f"year must be 2007 or 2012, got {year!r}")
    if split not in VOC_SPLITS:
        raise ValueError(f"split must be one of {VOC_SPLITS}, got {split!r}")
    if download:
        from lib.data.download import download_voc  # only here: it needs the network

        root = download_voc(Path(root), year)
    folder = voc_dir(root, year)
    listing = folder / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} is missing: VOC{year} has no split {split!r} here "
                                "(VOC2012's test annotations are not public)")
    ids, boxes, classes, paths = [], [], [], []
    for image_id in listing.read_text().split():
        image_boxes, names = parse_voc_xml(folder / "Annotations" / f"{image_id}.xml", remove_hards)
        if remove_hards and not len(image_boxes):
            continue  # LOST's no-hard setting skips images whose objects are all truncated or difficult
        ids.append(image_id)
        boxes.append(image_boxes)
        classes.append(names)
        paths.append(folder / "JPEGImages" / f"{image_id}.jpg")
    return BoxDataset(f"voc{year[2:]}/{split}", ids, boxes, classes, paths=paths)


# ----------------------------------------------------------------------------- YOLO / COCO128
def load_yolo(images_dir: str | Path, labels_dir: str | Path, names: dict | list | None = None,
              name: str = "yolo") -> BoxDataset:
    """YOLO detection labels: one ``<image stem>.txt`` per image, lines ``class cx cy w h`` in [0, 1].

    An image without a label file has no boxes (keep it or drop it with ``with_boxes()``).
    """
    from PIL import Image

    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"label folder {labels_dir} does not exist")
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"no .jpg/.png images in {images_dir}")
    boxes, classes = [], []
    for path in paths:
        label_file = labels_dir / f"{path.stem}.txt"
        rows = np.loadtxt(label_file, ndmin=2) if label_file.is_file() else np.zeros((0, 5))
        if rows.size and rows.shape[1] != 5:
            raise ValueError(f"{label_file}: YOLO detection lines have 5 columns (class cx cy w h), "
                             f"found {rows.shape[1]} (segmentation polygons are not boxes)")
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
        cx, cy, w, h = (rows[:, 1:] * [width, height, width, height]).T if rows.size else np.zeros((4, 0))
        boxes.append(_box_array(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)))
        classes.append([names[int(c)] if names is not None else str(int(c)) for c in rows[:, 0]])
    return BoxDataset(name, [p.stem for p in paths], boxes, classes, paths=paths)


def load_coco(root: str | Path, split: str = "val2017") -> BoxDataset:
    """COCO in the ``lightly-ai/coco128_yolo`` layout (e.g. COCO128: ``../shared/data/coco128``)."""
    import yaml

    root = Path(root)
    config = root / "object_detection" / "config.yaml"
    names = yaml.safe_load(config.read_text())["names"] if config.is_file() else None
    return load_yolo(root / "images" / split, root / "object_detection" / "labels" / split, names,
                     name=f"coco/{split}")


# ----------------------------------------------------------------------------- Tiny ImageNet
def load_tiny_imagenet_val(root: str | Path) -> BoxDataset:
    """Tiny ImageNet's validation split with its one box per image (``val/val_annotations.txt``)."""
    root = Path(root)
    table = root / "val" / "val_annotations.txt"
    if not table.is_file():
        raise FileNotFoundError(f"{table} is missing: point root at the tiny-imagenet-200 folder")
    ids, boxes, classes, paths = [], [], [], []
    for line in table.read_text().splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise ValueError(f"{table}: expected 6 tab-separated fields (file wnid x0 y0 x1 y1), got {line!r}")
        file, wnid, x0, y0, x1, y1 = fields
        ids.append(Path(file).stem)
        boxes.append(_box_array([float(x0), float(y0), float(x1) + 1, float(y1) + 1]))  # inclusive -> exclusive
        classes.append([wnid])
        paths.append(root / "val" / "images" / file)
    return BoxDataset("tiny_imagenet/val", ids, boxes, classes, paths=paths)


def load_boxes(name: str, root: str | Path, **kwargs) -> BoxDataset:
    """Any supported dataset by name: shapes (split=), voc07/voc12 (split=, remove_hards=, download=),
    coco (split=), tiny_imagenet."""
    loaders = {
        "shapes": load_shapes,
        "voc07": lambda root, **kw: load_voc(root, "2007", **kw),
        "voc12": lambda root, **kw: load_voc(root, "2012", **kw),
        "coco": load_coco,
        "tiny_imagenet": load_tiny_imagenet_val,
    }
    if name not in loaders:
        raise ValueError(f"unknown box dataset {name!r}; choose one of {DATASETS}")
    return loaders[name](root, **kwargs)
