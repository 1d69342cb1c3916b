"""CIFAR-10 from a folder per class of PNG images (``<root>/<class>/*.png``), e.g. the test split in
``../shared/data/cifar10/test``.

Study B retrains on one part of a held-out split and tests on the other. :func:`split` divides
the images deterministically: within each class the files (sorted by name) are shuffled with
``seed`` and the first ``retrain_share`` go to retraining, so both halves keep the class balance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lib import settings

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load(root: str | Path) -> dict:
    """Every image of the folder: ``images`` uint8 (N, 32, 32, 3), ``labels``, ``files``, ``classes``.

    Classes are the sub-folders in sorted order (CIFAR-10's own label order for its ten names).
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {root} does not exist; point `root` at a folder of <class>/*.png "
                                f"(e.g. {settings.shared_data() / 'cifar10' / 'test'})")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, label) for label, c in enumerate(classes) for f in sorted((root / c).glob("*.png"))]
    if not files:
        raise FileNotFoundError(f"no <class>/*.png images under {root}")
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])
    return {"images": images, "labels": np.array([label for _, label in files], dtype=np.int64),
            "files": [str(f.relative_to(root)) for f, _ in files], "classes": classes}


def split(labels: np.ndarray, retrain_share: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(retrain indices, test indices): a class-stratified, seeded, disjoint split of every index."""
    if not 0 < retrain_share < 1:
        raise ValueError(f"retrain_share must be in (0, 1), got {retrain_share}")
    rng = np.random.default_rng(seed)
    retrain, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(retrain_share * len(members)))
        retrain.append(members[:cut])
        test.append(members[cut:])
    return np.sort(np.concatenate(retrain)), np.sort(np.concatenate(test))


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of ``n`` of ``labels``: every class in proportion to its count, drawn at random
    (seeded) within each class.

    Shares are rounded by largest remainder; when ``n`` is at least the number of classes every class
    gets at least one position. ``n`` >= ``len(labels)`` returns every position.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        return np.arange(0)
    classes, counts = np.unique(labels, return_counts=True)
    quota = n * counts / counts.sum()
    take = np.floor(quota).astype(int)
    if n >= len(classes):
        take = np.maximum(take, 1)
    while take.sum() > n:  # the floor of one per class overshot: take back where it is most over quota
        over = np.where(take > 1, take - quota, -np.inf)
        take[int(np.argmax(over))] -= 1
    while take.sum() < n:  # largest remainders first
        under = np.where(take < counts, quota - take, -np.inf)
        take[int(np.argmax(under))] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


class PadCropFlip(torch.utils.data.Dataset):
    """He et al.'s CIFAR augmentation on normalised images: pad ``pad`` black pixels on every side,
    crop back to the original size at random, flip horizontally with probability 1/2.

    The padding is black in pixel space (``(0 - mean) / std`` once normalised), as in the training of
    the released CIFAR ResNets. It matters: their batch-norm statistics carry the black borders, and
    re-estimating them on unpadded or reflect-padded images (what retraining in training mode does)
    costs the dense ResNet-20 3 points on the test half (measured: 91.5% -> 88.1-88.6%; 91.7% with
    black padding).
    """

    def __init__(self, dataset, mean, std, pad: int = 4):
        self.dataset, self.pad = dataset, pad
        self.black = (-torch.as_tensor(mean) / torch.as_tensor(std)).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        _, h, w = image.shape
        canvas = self.black.expand(3, h + 2 * self.pad, w + 2 * self.pad).clone()
        canvas[:, self.pad:self.pad + h, self.pad:self.pad + w] = image
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        image = canvas[:, top:top + h, left:left + w]
        return (image.flip(-1) if torch.rand(()) < 0.5 else image), label


def datasets(root: str | Path, mean, std, retrain_share: float = 0.5, seed: int = 0, n_val: int = 500,
             augment: bool = True) -> dict:
    """Torch datasets ``train`` (the retraining part; with :class:`PadCropFlip` if ``augment``: leave the
    recipe's own augmentation empty then), ``test`` (the rest), ``full`` (every image) and ``val``: ``n_val``
    images of the test part, class-stratified and seeded (:func:`stratified_subset`; the test part is
    sorted by class, so its first images would all be airplanes), only to monitor retraining (nothing is
    selected on it, so it does not leak into the test accuracy)."""
    from lib.data.transforms import ArrayDataset

    data = load(root)
    retrain, test = split(data["labels"], retrain_share, seed)
    make = lambda idx: ArrayDataset(data["images"][idx], data["labels"][idx], mean, std)  # noqa: E731
    train = PadCropFlip(make(retrain), mean, std) if augment else make(retrain)
    return {"train": train, "val": make(test[stratified_subset(data["labels"][test], n_val, seed)]), "test": make(test),
            "full": make(np.arange(len(data["labels"]))), "classes": data["classes"], "image_size": 32}
