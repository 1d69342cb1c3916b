"""Labelled image datasets for training and pruning, one name per dataset.

A dataset is given as a dict, its ``name`` one of :data:`DATASETS` (add one with :func:`register_dataset`) and
the keys that dataset takes::

    {"name": "shapes", "root": "data/shapes"}
    {"name": "cifar10", "root": "../shared/data/cifar10/test", "retrain_share": 0.5, "seed": 0, "n_val": 500,
     "augment": True}
    {"name": "imagenet", "root": "/data/imagenet", "split": "val", "retrain_per_class": 25,
     "test_per_class": 25, "n_val": 1000, "image_size": 224, "resize": 256, "seed": 0}
    {"name": "imagenet", "root": "/data/imagenet", "train_split": "train", "split": "val", "n_val": 10000,
     "image_size": 224, "resize": 256, "augment": True, "seed": 0}     (train on train, test on val)
    {"name": "imagenet_sample", "root": "../shared/data/imagenet-sample-images", "n_val": 100}
                                     (one image per class, evaluation only: a pretrained model, epochs 0)

:func:`classification_data` turns it into the ``train`` / ``val`` / ``test`` datasets (``full``: every
image, where the dataset has such a split), the ``image_size`` and an ``id`` that names the data.

``../shared/data`` in these examples (and in the presets) is where the shared real data lies by default:
``lib.settings.shared_data`` (``$PRUNING_SHARED_DATA``) names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lib.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: the keys its dict takes besides ``name`` and ``root``, and its loader,
    ``load(root, mean, std, **options) -> {"train", "val", "test", "image_size"[, "full"][, "id"]}``."""

    name: str
    keys: frozenset
    load: Callable[..., dict]


DATASETS = Registry("dataset")


def register_dataset(name: str, keys=()):
    """Decorator: ``@register_dataset("cifar10", keys=("retrain_share", "seed"))`` on a loader
    ``load(root, mean, std, **options)`` that returns the ``train`` / ``val`` / ``test`` datasets (items
    ``(image, label)``, images normalised with ``mean`` / ``std``) and the ``image_size``; ``keys``: the
    options its dataset dict may carry (``root`` is always there). The name is then accepted wherever a
    dataset dict is (params.yaml ``train.dataset``, ``pruning.dataset``)."""

    def wrap(load):
        DATASETS.add(name, DatasetSpec(name, frozenset(keys) | {"root"}, load))
        return load

    return wrap

EVALUATION_ONLY = {"imagenet_sample"}  # no training split: pretrained models are scored on it, never trained


def check_training_data(dataset: dict | None, epochs: int, what: str = "dataset") -> None:
    """Refuse to train or retrain on a dataset that is for evaluation only (it has no training images)."""
    name = (dataset or {}).get("name", "shapes")
    if name in EVALUATION_ONLY and epochs > 0:
        raise ValueError(f"{what} {name!r} has no training images (every image is a test image): set "
                         f"recipe.epochs to 0 (score the pretrained model as it is), or train on another dataset")


def check_dataset(dataset: dict, exists: bool = True) -> None:
    """A dataset dict's name and keys (and, with ``exists``, that its root is there)."""
    name = dataset.get("name", "shapes")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} "
                         "(or add one with lib.data.datasets.register_dataset)")
    unknown = set(dataset) - DATASETS[name].keys - {"name"}
    if unknown:
        known = sorted(DATASETS[name].keys)
        raise ValueError(f"dataset {name!r} has no parameter(s) {sorted(unknown)}; known: {known}")
    if "root" not in dataset:
        raise ValueError(f"dataset {name!r} needs a 'root' folder")
    if exists and not Path(dataset["root"]).exists():
        raise FileNotFoundError(f"dataset root {dataset['root']} does not exist")


@register_dataset("shapes")
def shapes_data(data_dir: str | Path, mean, std) -> dict:
    """The embedded dataset: train / val / test datasets, image size and an id."""
    from lib.data import shapes

    data = shapes.datasets(data_dir, mean=mean, std=std)
    return {**data, "image_size": shapes.load_meta(data_dir)["config"]["image_size"], "id": str(data_dir)}


@register_dataset("cifar10", keys=("retrain_share", "seed", "n_val", "augment"))
def cifar10_data(root, mean, std, **options) -> dict:
    from lib.data import cifar10

    return cifar10.datasets(root, mean, std, **options)


@register_dataset("imagenet", keys=("split", "train_split", "retrain_per_class", "test_per_class", "n_val",
                                    "image_size", "resize", "seed", "augment"))
def imagenet_data(root, mean, std, split: str = "val", **options) -> dict:
    from lib.data import imagenet

    return imagenet.datasets(root, mean, std, split_name=split, **options)


@register_dataset("imagenet_sample", keys=("n_val", "image_size", "resize", "seed", "limit"))
def imagenet_sample_data(root, mean, std, **options) -> dict:
    from lib.data import imagenet

    return imagenet.sample_datasets(root, mean, std, **options)


DISTILLATION_KEYS = ("image_size", "test_root", "n_val", "seed", "limit", "test_image_size", "test_resize",
                     "test_limit")


@register_dataset("tiny_imagenet", keys=("labels",) + DISTILLATION_KEYS)
def tiny_imagenet_data(root, mean, std, **options) -> dict:
    """Tiny ImageNet's val images to train on (distillation, ``lib.distill``), top-1 on the ImageNet sample images."""
    from lib.data import imagenet

    return imagenet.tiny_imagenet_datasets(root, mean, std, **options)


@register_dataset("image_folder", keys=DISTILLATION_KEYS)
def image_folder_data(root, mean, std, **options) -> dict:
    """Unlabelled images to train on by distillation (``lib.distill``), top-1 on the ImageNet sample images."""
    from lib.data import imagenet

    return imagenet.image_folder_datasets(root, mean, std, **options)


def classification_data(dataset: dict, mean, std) -> dict:
    """The datasets training and pruning need (train, val, test, image_size, id; ``full``: every image, if any).

    ``id`` names the data (in a training run's identity): the loader's own, else the dataset dict."""
    options = {k: v for k, v in dataset.items() if k not in ("name", "root")}
    name, root = dataset.get("name", "shapes"), dataset["root"]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} "
                         "(or add one with lib.data.datasets.register_dataset)")
    data = DATASETS[name].load(root, mean, std, **options)
    return {"id": {"name": name, "root": str(root), **options}, **data}


def dataset_paths(dataset: dict, name: str = "dataset") -> list[tuple[str, Path, str]]:
    """The folders a dataset dict reads, as (parameter, path, kind of data) for the errors that name them."""
    kind, root = dataset.get("name", "shapes"), Path(dataset["root"])
    if kind == "imagenet":
        splits = [dataset.get("split", "val")] + ([dataset["train_split"]] if dataset.get("train_split") else [])
        return [(f"{name}.root", root / split, "imagenet") for split in splits]
    test = [(f"{name}.test_root", Path(dataset["test_root"]), "imagenet_sample")] if dataset.get("test_root") else []
    return [(f"{name}.root", root, kind)] + test
