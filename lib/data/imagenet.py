"""ImageNet (or any ImageFolder-style dataset) in the standard layout ``<root>/<split>/<wnid>/<image>``.

Classes are the sorted sub-folder names of the split, which for ImageNet-1k is the standard class
index order. Two ways to make training and test data (:func:`datasets`):

- Study B retrains on part of the validation split and tests on the rest: :func:`split` takes, per
  class, ``retrain_per_class`` images for retraining and ``test_per_class`` of the others for testing
  (``None``: all the others), after a seeded shuffle of the sorted files.
- Study A trains from scratch on ImageNet-1k: ``train_split="train"`` trains on every image of
  ``<root>/train`` and tests on every image of ``<root>/<split>`` (``val``).

Either way ``val`` (monitoring during training only) is a seeded subset of ``n_val`` test images.
Images are decoded lazily. Test images are resized (shorter side ``resize``) and centre-cropped to
``image_size``, the evaluation transform. Training images get the same transform, with the training
recipe's augmentation on top (``lib.train``), unless ``augment=True``: then they get the standard
ImageNet training transform instead, ``RandomResizedCrop(image_size)`` of the decoded image and a
horizontal flip (torchvision's reference recipe, Study A's), and the recipe should add none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lib import settings

EXTENSIONS = (".jpeg", ".jpg", ".png")


def scan(root: str | Path, split: str = "val", verify: bool = True) -> dict:
    """``files`` (paths), ``labels`` and ``classes`` of one split of an ImageFolder-style tree; ``verify``: open
    every file first (:func:`lib.storage.verify_images`), so a corrupt one is named before training, not mid-epoch."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: `root` must hold <split>/<wnid>/<image> "
                                "(ImageNet's standard layout, e.g. root/val/n01440764/ILSVRC2012_val_00000293.JPEG)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        images = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in EXTENSIONS)
        files += images
        labels += [label] * len(images)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(EXTENSIONS)}) under {folder}/<class>/")
    if verify:
        from lib import storage

        storage.verify_images(files, f"{folder}")
    return {"files": files, "labels": np.array(labels, dtype=np.int64), "classes": classes}


def split(labels: np.ndarray, retrain_per_class: int, test_per_class: int | None = None,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(retrain indices, test indices), disjoint, class by class; fails if a class is too small."""
    if retrain_per_class < 1 or (test_per_class is not None and test_per_class < 1):
        raise ValueError("retrain_per_class and test_per_class must be positive")
    rng = np.random.default_rng(seed)
    retrain, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        need = retrain_per_class + (test_per_class or 1)
        if len(members) < need:
            raise ValueError(f"class {label} has {len(members)} images, fewer than the {need} the split needs")
        retrain.append(members[:retrain_per_class])
        end = None if test_per_class is None else retrain_per_class + test_per_class
        test.append(members[retrain_per_class:end])
    return np.sort(np.concatenate(retrain)), np.sort(np.concatenate(test))


class ImageFiles(torch.utils.data.Dataset):
    """(normalised image, label) items decoded from files: resize the shorter side and centre crop, or
    (``augment``) a random resized crop of the whole image and a random horizontal flip.

    Items are decoded in DataLoader worker processes when the loader has any (``decodes_files``: what
    ``lib.train.default_workers`` looks for); a file that fails to decode raises an error naming it.
    """

    decodes_files = True

    def __init__(self, files, labels, mean, std, image_size: int = 224, resize: int = 256, augment: bool = False):
        from torchvision.transforms import v2

        self.files, self.labels = list(files), torch.as_tensor(labels, dtype=torch.long)
        geometry = ([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()] if augment
                    else [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)])
        self.transform = v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(list(mean), list(std))])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        from PIL import Image

        try:
            with Image.open(self.files[index]) as image:
                return self.transform(image.convert("RGB")), self.labels[index]
        except OSError as error:  # truncated or corrupt (verify() checks headers only for JPEG): name the file
            from lib import storage

            raise storage.image_error(self.files[index], error) from error


def datasets(root: str | Path, mean, std, split_name: str = "val", retrain_per_class: int | None = None,
             test_per_class: int | None = None, n_val: int = 1000, image_size: int = 224, resize: int = 256,
             seed: int = 0, train_split: str | None = None, augment: bool = False) -> dict:
    """``train``, ``test`` and ``val`` (``n_val`` images of the test part, only for monitoring training).

    Without ``train_split`` (Study B): ``train`` is ``retrain_per_class`` images per class of ``split_name``
    (default 25) and ``test`` the rest of it (or ``test_per_class`` per class). With ``train_split``
    (Study A): ``train`` is all of ``<root>/<train_split>`` and ``test`` all of ``<root>/<split_name>``,
    which must have the same classes. ``augment``: the training transform (see the module docstring).
    """
    test_found = scan(root, split_name)
    test_files = np.array(test_found["files"], dtype=object)
    if train_split is None:
        retrain, test = split(test_found["labels"], 25 if retrain_per_class is None else retrain_per_class,
                              test_per_class, seed)
        train_files, train_labels = test_files[retrain], test_found["labels"][retrain]
        test_files, test_labels = test_files[test], test_found["labels"][test]
    else:
        if retrain_per_class is not None or test_per_class is not None:
            raise ValueError("retrain_per_class and test_per_class split one split into two; with train_split "
                             "the training and test splits are used whole: leave them out")
        train_found = scan(root, train_split)
        if train_found["classes"] != test_found["classes"]:
            raise ValueError(f"{root}/{train_split} and {root}/{split_name} must have the same class folders "
                             f"({len(train_found['classes'])} and {len(test_found['classes'])} found)")
        train_files, train_labels = np.array(train_found["files"], dtype=object), train_found["labels"]
        test_labels = test_found["labels"]
    val = np.sort(np.random.default_rng(seed).permutation(len(test_files))[:n_val])
    make = lambda files, labels, train=False: ImageFiles(files, labels, mean, std, image_size, resize,  # noqa: E731
                                                        augment=augment and train)
    return {"train": make(train_files, train_labels, train=True), "val": make(test_files[val], test_labels[val]),
            "test": make(test_files, test_labels), "classes": test_found["classes"], "image_size": image_size}


def sample_datasets(root: str | Path, mean, std, n_val: int = 100, image_size: int = 224, resize: int = 256,
                    seed: int = 0, limit: int | None = None) -> dict:
    """The ImageNet sample images (one image per class, ``<root>/<wnid>_<name>.JPEG``), for evaluation only.

    An image's label is its index in sorted file-name order, which is the ImageNet class index when the
    folder holds one image per class named by its wnid (as ``imagenet-sample-images`` does). ``test`` is every
    image, ``val`` a seeded subset of ``n_val`` of them, ``train`` empty: a pretrained model is scored, never
    trained or retrained, on these (``recipe.epochs`` must be 0, :func:`lib.data.datasets.check_training_data`).
    ``limit``: a seeded subset of that many images (each keeps its label), for a smaller run.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: `root` must be a folder of images, one per class in "
                                f"class order (e.g. {settings.shared_data() / 'imagenet-sample-images'})")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(EXTENSIONS)}) in {folder}")
    from lib import storage

    storage.verify_images(files, str(folder))
    labels = np.arange(len(files), dtype=np.int64)
    rng = np.random.default_rng(seed)
    test = np.arange(len(files)) if limit is None else np.sort(rng.permutation(len(files))[:limit])
    val = np.sort(rng.permutation(test)[:n_val])
    make = lambda chosen: ImageFiles([files[i] for i in chosen], labels[chosen], mean, std, image_size,  # noqa: E731
                                     resize)
    return {"train": make(np.array([], dtype=np.int64)), "val": make(val), "test": make(test),
            "classes": [f.stem for f in files], "image_size": image_size}


def imagenet_index(wnids) -> np.ndarray:
    """ImageNet-1k class indices of WordNet ids (the sorted ILSVRC-2012 ids; timm ships the list offline)."""
    from timm.data import ImageNetInfo

    index = {wnid: i for i, wnid in enumerate(sorted(ImageNetInfo().label_names()))}
    unknown = sorted(set(wnids) - set(index))
    if unknown:
        raise ValueError(f"{len(unknown)} WordNet id(s) are no ImageNet-1k class (e.g. {unknown[:3]}): "
                         "labels: imagenet needs ImageNet's classes; use labels: none")
    return np.array([index[w] for w in wnids], dtype=np.int64)


def distillation_datasets(files, labels, mean, std, image_size: int, test_root: str | Path | None, n_val: int,
                          seed: int, limit: int | None, test_image_size: int, test_resize: int,
                          test_limit: int | None = None) -> dict:
    """Training images for distillation (``files`` resized to ``image_size``; ``labels`` -1 where unlabelled)
    and, as ``val`` / ``test``, the ImageNet sample images of ``test_root`` (:func:`sample_datasets`: top-1 over
    all of them, ``n_val`` for monitoring) at ``test_image_size``. ``limit``: a seeded subset of the training
    images (a smaller run); ``test_limit``: the same for the test images (a smoke run)."""
    if test_root is None:
        raise ValueError("a distillation dataset needs test_root, a folder of labelled test images (one ImageNet "
                         f"image per class, e.g. {settings.shared_data() / 'imagenet-sample-images'}): top-1 is "
                         "measured there")
    if limit is not None and not 0 < limit <= len(files):
        raise ValueError(f"limit must be between 1 and the {len(files)} training images, got {limit}")
    from lib import storage

    storage.verify_images(files, "distillation images")
    chosen = (np.arange(len(files)) if limit is None
              else np.sort(np.random.default_rng(seed).permutation(len(files))[:limit]))
    test = sample_datasets(test_root, mean, std, n_val=n_val, image_size=test_image_size, resize=test_resize, seed=seed,
                           limit=test_limit)
    train = ImageFiles([files[i] for i in chosen], np.asarray(labels)[chosen], mean, std, image_size,
                       resize=image_size)
    return {"train": train, "val": test["val"], "test": test["test"], "image_size": image_size}


def tiny_imagenet_datasets(root: str | Path, mean, std, labels: str = "imagenet", image_size: int = 64,
                           test_root: str | Path | None = None, n_val: int = 100, seed: int = 0,
                           limit: int | None = None, test_image_size: int = 224, test_resize: int = 256,
                           test_limit: int | None = None) -> dict:
    """Tiny ImageNet's 10,000 validation images (``<root>/val/images``, 64 px, 200 ImageNet classes) to distil
    on, upsampled to ``image_size``; ``labels``: ``imagenet`` (each image's ImageNet-1k class index, from
    ``val_annotations.txt``) or ``none`` (-1: unlabelled). See :func:`distillation_datasets`."""
    if labels not in ("imagenet", "none"):
        raise ValueError(f"labels must be 'imagenet' (ImageNet-1k class indices) or 'none', got {labels!r}")
    table = Path(root) / "val" / "val_annotations.txt"
    if not table.is_file():
        raise FileNotFoundError(f"{table} is missing: root must be the tiny-imagenet-200 folder "
                                "(val/images/*.JPEG and val/val_annotations.txt)")
    rows = [line.split("\t") for line in table.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: int(row[0].split("_")[1].split(".")[0]))  # val_0, val_1, ...: numeric order
    files = [Path(root) / "val" / "images" / row[0] for row in rows]
    targets = imagenet_index([row[1] for row in rows]) if labels == "imagenet" else np.full(len(rows), -1)
    return distillation_datasets(files, targets, mean, std, image_size, test_root, n_val, seed, limit,
                                 test_image_size, test_resize, test_limit)


def image_folder_datasets(root: str | Path, mean, std, image_size: int = 128, test_root: str | Path | None = None,
                          n_val: int = 100, seed: int = 0, limit: int | None = None, test_image_size: int = 224,
                          test_resize: int = 256, test_limit: int | None = None) -> dict:
    """Every image under ``root`` (any depth, sorted paths), unlabelled (-1), to distil on; resized (shorter side)
    and centre-cropped to ``image_size``. See :func:`distillation_datasets`."""
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: root must be a folder of images (any depth)")
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(EXTENSIONS)}) under {folder}")
    return distillation_datasets(files, np.full(len(files), -1), mean, std, image_size, test_root, n_val, seed, limit,
                                 test_image_size, test_resize, test_limit)
