"""Generated images in ImageNet's folder layout, for benchmarks and checks of the input pipeline.

``write(root, classes=10, per_class=20)`` writes ``root/<split>/<wnid>/<wnid>_<i>.JPEG``: JPEGs of
random sizes between ``min_size`` and ``max_size`` pixels a side (ImageNet's are mostly 300-500 px), smooth
random colour fields with a class-coloured tint, so that a model can learn something and JPEG decoding
costs what it costs on photographs of that size (not on white noise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def wnid(label: int) -> str:
    return f"n{label:08d}"


def write(root: str | Path, classes: int = 10, per_class: int = 20, splits=("train", "val"), min_size: int = 300,
          max_size: int = 500, seed: int = 0, quality: int = 90) -> Path:
    """Write the images (existing files are kept) and return ``root``."""
    from PIL import Image

    root, rng = Path(root), np.random.default_rng(seed)
    for split in splits:
        for label in range(classes):
            folder = root / split / wnid(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                path = folder / f"{wnid(label)}_{i}.JPEG"
                height, width = rng.integers(min_size, max_size + 1, size=2)
                if path.exists():
                    continue
                coarse = rng.integers(0, 200, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
                image = Image.fromarray(coarse).resize((int(width), int(height)), Image.BILINEAR)
                pixels = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (height, width, 3))
                pixels[..., label % 3] += 40
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=quality)
    return root
