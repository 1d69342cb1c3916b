"""The embedded default dataset: textured shapes on cluttered backgrounds, with exact masks.

Every class is a (shape, texture) pair, so an object's class is carried by two cues that can be
separated: the *cue_conflict* split combines the shape of one class with the texture of another
(both labels kept), *edge* keeps only the outline and *silhouette* only the filled shape, as in
Geirhos et al.'s model-vs-human stimuli. Each image is drawn from its own random stream seeded by
(seed, split, index), so it does not change when the size of another split changes.

Files (one ``<split>.npz`` per split, plus ``meta.json``)::

    images  uint8 (N, H, W, 3)
    masks   bool  (N, H, W)      exact object pixels (the filled shape)
    boxes   int32 (N, 4)         x0, y0, x1, y1 in pixels, x1/y1 exclusive (tight around the mask)
    labels  int64 (N,)           the class (for cue_conflict: the shape's class)
    texture_labels int64 (N,)    the texture's class (equal to labels outside cue_conflict)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lib import storage

SPLITS = ("train", "val", "test", "cue_conflict", "edge", "silhouette")
EVAL_SPLITS = ("cue_conflict", "edge", "silhouette")

# Shapes as polygons on the unit disc (angle, radius) so that they scale and rotate exactly.
def _star(points=5, inner=0.45):
    return [((k * math.pi / points), 1.0 if k % 2 == 0 else inner) for k in range(2 * points)]


def _regular(n, phase=0.0):
    return [(phase + 2 * math.pi * k / n, 1.0) for k in range(n)]


def _cartesian(points):
    return [(math.atan2(y, x), math.hypot(x, y)) for x, y in points]


SHAPES = {
    "circle": _regular(48),
    "square": _regular(4, math.pi / 4),
    "triangle": _regular(3, -math.pi / 2),
    "star": _star(5),
    "cross": _cartesian([(0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3),
                         (-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3)]),
    "hexagon": _regular(6),
    "arrow": _cartesian([(1, 0), (0.1, 0.8), (0.1, 0.35), (-1, 0.35), (-1, -0.35), (0.1, -0.35), (0.1, -0.8)]),
    "crescent": None,  # drawn as a circle minus an offset circle (not a polygon)
    "heart": _cartesian([(math.sin(t) ** 3, (13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                                             - math.cos(4 * t)) / 16) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]),
    "lshape": _cartesian([(-0.8, 1), (-0.2, 1), (-0.2, -0.3), (0.8, -0.3), (0.8, -0.9), (-0.8, -0.9)]),
    "diamond": [(0.0, 1.0), (math.pi / 2, 0.55), (math.pi, 1.0), (3 * math.pi / 2, 0.55)],
    "pentagon": _regular(5, -math.pi / 2),
}

# Textures: a colour (RGB in [0, 1]) and a pattern. Class-typical, with small per-image jitter.
TEXTURES = {
    "red_stripes": ((0.85, 0.15, 0.15), "stripes", 0.0),
    "green_dots": ((0.15, 0.7, 0.2), "dots", 0.0),
    "blue_checker": ((0.15, 0.3, 0.9), "checker", 0.0),
    "yellow_waves": ((0.9, 0.85, 0.1), "waves", 0.0),
    "magenta_diag": ((0.85, 0.2, 0.8), "stripes", math.pi / 4),
    "cyan_grid": ((0.1, 0.8, 0.85), "grid", 0.0),
    "orange_noise": ((0.95, 0.55, 0.1), "noise", 0.0),
    "purple_rings": ((0.5, 0.2, 0.75), "rings", 0.0),
    "white_dots": ((0.95, 0.95, 0.95), "dots", 0.0),
    "brown_vstripes": ((0.55, 0.33, 0.15), "stripes", math.pi / 2),
    "pink_checker": ((0.98, 0.6, 0.7), "checker", 0.0),
    "teal_waves": ((0.1, 0.5, 0.45), "waves", math.pi / 2),
}


@dataclass(frozen=True)
class ShapesConfig:
    seed: int = 0
    image_size: int = 64
    num_classes: int = 10
    n_train: int = 2000
    n_val: int = 300
    n_test: int = 500
    n_eval: int = 200           # per evaluation split: cue_conflict, edge, silhouette
    distractors: int = 3        # maximum number of distractor shapes per image
    object_scale: tuple = (0.18, 0.30)   # object radius as a fraction of the image size: a centred box finds
                                         # few objects (CorLoc 0.14 on the test split), so localisation is not trivial

    def __post_init__(self):
        from lib.params import check_fields

        check_fields(self, "data")  # `n_train: abc` names the field, not a TypeError in a comparison
        if not (len(self.object_scale) == 2 and 0 < self.object_scale[0] <= self.object_scale[1] < 0.5):
            raise ValueError(f"object_scale must be two radii (fractions of the image) with 0 < low <= high < 0.5, "
                             f"got {self.object_scale}")
        if self.distractors < 0:
            raise ValueError(f"distractors must be 0 or more, got {self.distractors}")
        if not 2 <= self.num_classes <= min(len(SHAPES), len(TEXTURES)):
            raise ValueError(f"num_classes must be in [2, {min(len(SHAPES), len(TEXTURES))}], got {self.num_classes}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        for name in ("n_train", "n_val", "n_test", "n_eval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def size_of(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}.get(split, self.n_eval)


def check_stage(p: dict) -> list[tuple]:
    """The data stage's parameters (a :class:`ShapesConfig`), checked before any compute; it reads no input."""
    import dataclasses

    ShapesConfig(**{f.name: p[f.name] for f in dataclasses.fields(ShapesConfig) if f.name in p})
    return []


def class_names(num_classes: int) -> list[str]:
    shapes, textures = list(SHAPES)[:num_classes], list(TEXTURES)[:num_classes]
    return [f"{s}/{t}" for s, t in zip(shapes, textures)]


# ----------------------------------------------------------------------------- drawing
def _shape_mask(shape: str, size: int, centre, radius: float, angle: float) -> np.ndarray:
    """Exact binary mask of a shape rasterised at the image resolution (no anti-aliasing)."""
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = centre
    if shape == "crescent":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
        ox, oy = cx + 0.45 * radius * math.cos(angle), cy + 0.45 * radius * math.sin(angle)
        r2 = 0.8 * radius
        draw.ellipse([ox - r2, oy - r2, ox + r2, oy + r2], fill=0)
    else:
        polygon = [(cx + radius * r * math.cos(a + angle), cy + radius * r * math.sin(a + angle)) for a, r in SHAPES[shape]]
        draw.polygon(polygon, fill=1)
    return np.array(canvas, dtype=bool)


def _texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    colour, pattern, orientation = TEXTURES[name]
    colour = np.clip(np.array(colour) + rng.normal(0, 0.04, 3), 0, 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = orientation + rng.normal(0, 0.1)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    period = size / rng.uniform(7, 9)
    phase = rng.uniform(0, 2 * math.pi)
    if pattern == "stripes":
        p = (np.sin(2 * math.pi * u / period + phase) > 0).astype(np.float32)
    elif pattern == "dots":
        p = ((np.sin(2 * math.pi * xx / period + phase) * np.sin(2 * math.pi * yy / period + phase)) > 0.35).astype(np.float32)
    elif pattern == "checker":
        p = ((np.floor(xx / period * 2 + phase) + np.floor(yy / period * 2)) % 2).astype(np.float32)
    elif pattern == "waves":
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        p = (np.sin(2 * math.pi * u / period + 2 * np.sin(2 * math.pi * v / (2 * period)) + phase) > 0).astype(np.float32)
    elif pattern == "grid":
        p = ((np.abs(np.sin(math.pi * xx / period + phase)) < 0.3) | (np.abs(np.sin(math.pi * yy / period)) < 0.3)).astype(np.float32)
    elif pattern == "rings":
        r = np.hypot(xx - rng.uniform(0, size), yy - rng.uniform(0, size))
        p = (np.sin(2 * math.pi * r / period) > 0).astype(np.float32)
    elif pattern == "noise":
        p = rng.uniform(0, 1, (size, size)).astype(np.float32)
    else:
        raise ValueError(f"unknown pattern {pattern}")
    light = 0.55 + 0.45 * p  # pattern modulates the brightness of the class colour
    return (light[..., None] * colour[None, None, :]).astype(np.float32)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Clutter: a smooth random field, a few random strokes and per-pixel noise."""
    base = rng.uniform(0.25, 0.6, 3)
    coarse = rng.normal(0, 0.12, (4, 4, 3))
    field = np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size]
    image = np.clip(base + field, 0, 1)
    canvas = Image.fromarray((image * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(2, 6)):
        xy = [tuple(rng.uniform(0, size, 2)) for _ in range(2)]
        draw.line(xy, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 3)))
    image = np.asarray(canvas, dtype=np.float32) / 255
    return np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1)


def _place(rng, size, scale):
    radius = rng.uniform(*scale) * size
    margin = radius * 0.9
    centre = rng.uniform(margin, size - margin, 2)
    return centre, radius, rng.uniform(-math.pi / 8, math.pi / 8)


def _bbox(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.int32)


def render(config: ShapesConfig, split: str, index: int) -> dict:
    """Draw one image of a split. Returns image (uint8 HxWx3), mask, box, label, texture_label."""
    size, k = config.image_size, config.num_classes
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    shape_names, texture_names = list(SHAPES)[:k], list(TEXTURES)[:k]
    label = int(rng.integers(k))
    texture_label = label
    if split == "cue_conflict":
        texture_label = int((label + rng.integers(1, k)) % k)  # uniformly one of the other classes

    centre, radius, angle = _place(rng, size, config.object_scale)
    mask = _shape_mask(shape_names[label], size, centre, radius, angle)
    if mask.sum() < 4:  # degenerate rasterisation cannot happen at the configured scales; guard anyway
        raise RuntimeError(f"object too small in {split}[{index}]; increase image_size or object_scale")

    if split in ("edge", "silhouette"):
        image = np.ones((size, size, 3), np.float32)  # white page, as the model-vs-human stimuli
        if split == "silhouette":
            image[mask] = 0.0
        else:
            eroded = _erode(mask)
            image[mask & ~eroded] = 0.0
    else:
        image = _background(size, rng)
        # Distractors: smaller shapes of *other* kinds with random, non-class colours.
        distractor_shapes = [s for s in SHAPES if s not in shape_names] or shape_names
        for _ in range(rng.integers(0, config.distractors + 1)):
            d_centre, d_radius, d_angle = _place(rng, size, (0.08, 0.16))
            d_mask = _shape_mask(distractor_shapes[rng.integers(len(distractor_shapes))], size, d_centre, d_radius, d_angle)
            image[d_mask] = np.clip(rng.uniform(0, 1, 3) * rng.uniform(0.5, 1.0, (size, size, 1))[d_mask], 0, 1)
        texture = _texture(texture_names[texture_label], size, rng)
        image[mask] = texture[mask]
    return {
        "image": (np.clip(image, 0, 1) * 255).round().astype(np.uint8),
        "mask": mask,
        "box": _bbox(mask),
        "label": label,
        "texture_label": texture_label,
    }


def _erode(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Binary erosion by a 3x3 cross; the outline is mask minus its erosion."""
    out = mask.copy()
    for _ in range(width):
        padded = np.pad(out, 1)
        out = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return out


def generate_split(config: ShapesConfig, split: str) -> dict[str, np.ndarray]:
    items = [render(config, split, i) for i in range(config.size_of(split))]
    return {
        "images": np.stack([it["image"] for it in items]),
        "masks": np.stack([it["mask"] for it in items]),
        "boxes": np.stack([it["box"] for it in items]),
        "labels": np.array([it["label"] for it in items], dtype=np.int64),
        "texture_labels": np.array([it["texture_label"] for it in items], dtype=np.int64),
    }


def generate(config: ShapesConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Write every split and ``meta.json`` to ``out_dir`` (each file atomically)."""
    import io as _io

    from lib.storage import progress_bar as tqdm

    out_dir = Path(out_dir)
    for split in tqdm(SPLITS, desc="shapes splits", disable=not progress):
        arrays = generate_split(config, split)
        buffer = _io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        storage.write_bytes(out_dir / f"{split}.npz", buffer.getvalue())
    storage.save_json(out_dir / "meta.json", {
        "dataset": "shapes",
        "classes": class_names(config.num_classes),
        "config": asdict(config),
        "splits": {s: config.size_of(s) for s in SPLITS},
    })
    storage.save_json(out_dir / FINGERPRINT, compute_fingerprint(out_dir))
    return out_dir


# ----------------------------------------------------------------------------- identity by content
FINGERPRINT = "fingerprint.json"


def _fingerprinted_files(root: Path) -> list[Path]:
    return [root / "meta.json"] + [root / f"{split}.npz" for split in SPLITS if (root / f"{split}.npz").is_file()]


def compute_fingerprint(root: str | Path) -> dict:
    """Hash of the dataset's content: ``meta.json``'s bytes and every split's arrays (name, dtype, shape and
    values; not the npz files' bytes, which hold zip timestamps). Also records each file's size and mtime, so
    :func:`fingerprint` can tell whether a stored fingerprint still describes the files."""
    import hashlib

    root = Path(root)
    load_meta(root)  # a clear error if the folder is not a dataset
    digest, files = hashlib.sha256(), {}
    for path in _fingerprinted_files(root):
        digest.update(path.name.encode())
        if path.suffix == ".npz":
            data = storage.load_npz(path)
            for key in sorted(data):
                array = np.ascontiguousarray(data[key])
                digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
                digest.update(array.tobytes())
        else:
            digest.update(path.read_bytes())
        stat = path.stat()
        files[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"sha256": digest.hexdigest(), "files": files}


def fingerprint(root: str | Path) -> str:
    """The dataset's content hash: the one stored at generation (``fingerprint.json``) while its files are
    unchanged (same names, sizes and modification times), otherwise computed afresh (e.g. a copy, a DVC
    checkout, or a dataset written before fingerprints were stored)."""
    root = Path(root)
    stored = root / FINGERPRINT
    if stored.is_file():
        try:
            record = storage.load_json(stored)
            current = {p.name: {"size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
                       for p in _fingerprinted_files(root) if p.is_file()}
            if record.get("files") == current and record.get("sha256"):
                return record["sha256"]
        except (ValueError, OSError):
            pass
    return compute_fingerprint(root)["sha256"]


def load_split(root: str | Path, split: str) -> dict[str, np.ndarray]:
    """Arrays of one split (see the module docstring), with a clear error if it is missing."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    path = root / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: generate the embedded dataset first (dvc repro data, or run notebooks/00_data.ipynb)."
        )
    return storage.load_npz(path)


def load_meta(root: str | Path) -> dict:
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: generate the embedded dataset first (dvc repro data, or run notebooks/00_data.ipynb)."
        )
    return storage.load_json(path)


def datasets(root: str | Path, splits=("train", "val", "test"), mean=None, std=None) -> dict:
    """Torch datasets of (normalised image, label) for the given splits, normalised for a model."""
    from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ArrayDataset

    out = {}
    for split in splits:
        arrays = load_split(root, split)
        out[split] = ArrayDataset(arrays["images"], arrays["labels"], mean or IMAGENET_MEAN, std or IMAGENET_STD)
    return out


def plot_examples(root: str | Path, per_split: int = 8):
    """A figure with the first images of every split, the object's box drawn in."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    meta = load_meta(root)
    fig, axes = plt.subplots(len(SPLITS), per_split, figsize=(1.4 * per_split, 1.55 * len(SPLITS)))
    for row, split in enumerate(SPLITS):
        arrays = load_split(root, split)
        for col in range(per_split):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(arrays["labels"]):
                continue
            ax.imshow(arrays["images"][col])
            x0, y0, x1, y1 = arrays["boxes"][col]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1))
            shape = meta["classes"][arrays["labels"][col]].split("/")[0]
            texture = meta["classes"][arrays["texture_labels"][col]].split("/")[1]
            ax.set_title(f"{shape}\n{texture}" if split == "cue_conflict" else shape, fontsize=7)
        axes[row, 0].text(-0.1, 0.5, split, transform=axes[row, 0].transAxes, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def summary(root: str | Path) -> dict:
    """Counts, class balance and the share of the image the object covers, per split."""
    out = {}
    for split in SPLITS:
        arrays = load_split(root, split)
        out[split] = {"images": int(len(arrays["labels"])), "mask_share": float(arrays["masks"].mean()),
                      "min_class_count": int(np.bincount(arrays["labels"]).min())}
    return out
