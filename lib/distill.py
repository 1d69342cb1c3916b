"""Retraining by knowledge distillation: the dense model teaches its pruned copy, on images without labels.

A training recipe with ``distill`` set (``lib.train.Recipe``; e.g. ``distill: {temperature: 4.0}``) retrains the
model (the student) towards a teacher, the run's dense checkpoint (``lib.prune.schedules.run_schedule`` passes it),
with the loss

    T^2 KL(softmax(z_t / T) || softmax(z_s / T))  +  ce_weight CE(z_s, label)

(Hinton et al. 2015; the T^2 keeps the gradient's scale independent of T). ``batch_norm: frozen`` keeps the
batch-norm layers' running statistics (the dense model's training images') while the rest learns. The cross-entropy term needs labels:
items labelled -1 (an unlabelled image folder) are left out of it, and a positive ``ce_weight`` on a dataset
without any label is refused. ImageNet's training set cannot be had here, so this is how a pruned ImageNet model
is retrained: on Tiny ImageNet's images (``lib.data.datasets``, ``tiny_imagenet``) or any folder of images.

The teacher's outputs (``teacher_outputs``):

- ``cached``: computed once for every image and view, kept in a file keyed by the content of the teacher's weights,
  of the images and of their transform (so every round of an LRR run, and a resumed run, reuse them). A cache
  holds fixed views only: the recipe's augmentation may then only be ``flip`` (both mirror images are cached and
  each item draws one with its own seeded generator); random crops would make every view new and are refused.
- ``on_the_fly``: the teacher runs on every training batch (any augmentation; about one forward pass more per
  batch: docs/benchmarks/distill.md measures the two).

The targets the training loop sees are the teacher's logits and the item's label packed into one float tensor
(N, classes + 1), so the loop moves, shards and resumes them like labels; its training "accuracy" is then the
student's agreement with the teacher's top-1.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lib import storage
from lib.params import check_fields, dataclass_from_params

TEACHER_OUTPUTS = ("cached", "on_the_fly")
CACHEABLE_AUGMENTATION = {"flip"}


@dataclass(frozen=True)
class Distillation:
    temperature: float = 4.0         # T: softens both distributions
    ce_weight: float = 0.0           # weight of the cross-entropy with the dataset's labels (0: labels ignored)
    teacher_outputs: str = "cached"  # cached | on_the_fly (see the module docstring)
    batch_norm: str = "train"        # train: batch statistics, running ones updated | frozen: the dense model's kept

    def __post_init__(self):
        check_fields(self, "distillation")
        if not self.temperature > 0:
            raise ValueError(f"distill.temperature must be positive (1 is the plain softmax, 4 a usual choice), "
                             f"got {self.temperature}")
        if not self.ce_weight >= 0:
            raise ValueError(f"distill.ce_weight must be 0 (labels ignored) or positive, got {self.ce_weight}")
        if self.batch_norm not in ("train", "frozen"):
            raise ValueError(f"distill.batch_norm must be 'train' (batch statistics, running ones updated) or "
                             f"'frozen' (the running statistics kept, as at test time), got {self.batch_norm!r}")
        if self.teacher_outputs not in TEACHER_OUTPUTS:
            raise ValueError(f"distill.teacher_outputs must be one of {', '.join(TEACHER_OUTPUTS)}, "
                             f"got {self.teacher_outputs!r}")

    @classmethod
    def from_dict(cls, params: dict) -> "Distillation":
        return dataclass_from_params(cls, params, "distillation")

    def check_augmentation(self, augment) -> None:
        """Refuse an augmentation the cache cannot hold (before any compute)."""
        extra = sorted(set(augment) - CACHEABLE_AUGMENTATION)
        if self.teacher_outputs == "cached" and extra:
            raise ValueError(f"distill.teacher_outputs 'cached' keeps the teacher's outputs for fixed views of each "
                             f"image, but the recipe's augment {list(augment)} draws new views ({extra}): use augment "
                             f"[flip] or [], or teacher_outputs: on_the_fly")


def check(recipe) -> Distillation:
    """The distillation of a training recipe (``recipe.distill``), checked against its augmentation."""
    config = Distillation.from_dict(recipe.distill)
    config.check_augmentation(recipe.augment)
    return config


def distillation_loss(student_logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                      ce_weight: float = 0.0) -> torch.Tensor:
    """T^2 KL(teacher || student) at temperature T, averaged over the batch, plus ``ce_weight`` x the
    cross-entropy with the labels (the last column of ``targets``; -1: unlabelled, left out)."""
    teacher_logits, labels = targets[:, :-1], targets[:, -1].long()
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                  reduction="batchmean", log_target=True) * t * t
    if not ce_weight:
        return kl
    labelled = labels >= 0
    if not labelled.any():
        return kl + 0.0 * student_logits.sum()  # keeps the graph; nothing to add
    return kl + ce_weight * F.cross_entropy(student_logits[labelled].float(), labels[labelled])


def pack(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, classes + 1): the teacher's logits and the labels as the last column."""
    return torch.cat([teacher_logits.float(), labels.float().reshape(-1, 1).to(teacher_logits.device)], 1)


def dataset_labels(dataset) -> torch.Tensor | None:
    """The labels of a dataset that keeps them (``labels``; through ``Subset``), else None (unknown)."""
    if isinstance(dataset, torch.utils.data.Subset):
        labels = dataset_labels(dataset.dataset)
        return None if labels is None else labels[torch.as_tensor(dataset.indices)]
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return dataset.tensors[1]
    labels = getattr(dataset, "labels", None)
    return None if labels is None else torch.as_tensor(labels)


def content_id(dataset) -> str:
    """A digest of what a dataset yields: the bytes of its files, their labels and its transform (for datasets
    decoded from files, ``files``), else every item (in-memory data). A cache keyed by it follows the images,
    not their path."""
    h = hashlib.sha256()
    files = getattr(dataset, "files", None)
    if files is not None:
        for path in files:
            h.update(Path(path).read_bytes())
        h.update(repr(getattr(dataset, "transform", None)).encode())
        labels = dataset_labels(dataset)
        h.update(b"" if labels is None else labels.numpy().tobytes())
    else:
        for index in range(len(dataset)):
            image, label = dataset[index]
            h.update(torch.as_tensor(image).numpy().tobytes())
            h.update(torch.as_tensor(label).numpy().tobytes())
    return h.hexdigest()


def weights_id(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class CachedTargets(torch.utils.data.Dataset):
    """(image, packed target) items: the teacher's outputs looked up by index and view (``outputs``: views x
    items x classes; view 1, where there is one, is the mirror image, drawn with probability 1/2 from the torch
    generator, which ``lib.train.Augmented`` seeds per item)."""

    def __init__(self, dataset, outputs: torch.Tensor):
        self.dataset, self.outputs = dataset, outputs
        self.decodes_files = getattr(dataset, "decodes_files", False)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        view = int(torch.randint(len(self.outputs), ())) if len(self.outputs) > 1 else 0
        if view:
            image = image.flip(-1)
        return image, pack(self.outputs[view, index][None], torch.as_tensor(label).reshape(1))[0]


class Distiller:
    """The distillation of one ``fit`` call: its targets (:meth:`wrap`, :meth:`targets`), loss (call) and
    agreement count. ``teacher`` is copied (eval mode, no gradients); ``cache_dir`` holds cached outputs."""

    def __init__(self, recipe, teacher: nn.Module | None, cache_dir: str | Path, device, batch_size: int = 64):
        self.config = check(recipe)
        if teacher is None:
            raise ValueError("recipe.distill retrains towards a teacher, and none was given: distillation is a "
                             "retraining recipe (retrain.<arch>.recipe), whose teacher is the run's dense model")
        self.augment, self.cache_dir, self.device, self.batch_size = tuple(recipe.augment), Path(cache_dir), device, batch_size
        self.teacher = copy.deepcopy(teacher).to(device, memory_format=torch.channels_last).eval().requires_grad_(False)

    def check_labels(self, dataset) -> None:
        labels = dataset_labels(dataset)
        if self.config.ce_weight and labels is not None and not (labels >= 0).any():
            raise ValueError(f"distill.ce_weight {self.config.ce_weight} weighs a cross-entropy with the dataset's "
                             "labels, but its training images have none (every label is -1): set ce_weight 0, or "
                             "use a labelled dataset (e.g. tiny_imagenet with labels: imagenet)")

    def wrap(self, dataset, augmentation):
        """(training dataset, augmentation) for ``lib.train.Augmented``: with cached outputs the dataset yields
        the packed targets itself (and does its own flip); on the fly, both unchanged."""
        self.check_labels(dataset)
        if self.config.teacher_outputs == "on_the_fly":
            return dataset, augmentation
        return CachedTargets(dataset, self.cached_outputs(dataset)), None

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # the teacher's weights are channels_last (faster convolutions, docs/benchmarks/distill.md)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.teacher(x).float()

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The packed targets of a batch: computed from ``x`` on the fly, or already in ``y`` (cached)."""
        return pack(self.teacher_logits(x), y) if self.config.teacher_outputs == "on_the_fly" else y

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, targets, self.config.temperature, self.config.ce_weight)

    def train_mode(self, model: nn.Module) -> None:
        """After ``model.train()``: with ``batch_norm: frozen`` its batch-norm layers normalise with their running
        statistics (those of the dense model's training images), which the images distilled on (e.g. Tiny ImageNet
        upsampled) would otherwise replace; their affine weights still learn."""
        if self.config.batch_norm == "frozen":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    @staticmethod
    def agreement(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many items the student classifies as the teacher does."""
        return (logits.argmax(1) == targets[:, :-1].argmax(1)).sum()

    def cached_outputs(self, dataset) -> torch.Tensor:
        """views x items x classes: the teacher's logits of every item (view 1: mirrored, if ``flip``),
        read from the cache or computed once and written there."""
        views = 2 if "flip" in self.augment else 1
        key = hashlib.sha256(f"{weights_id(self.teacher)}:{content_id(dataset)}:{views}".encode()).hexdigest()[:24]
        path = self.cache_dir / f"teacher_{key}.pt"
        if path.is_file():
            return storage.load_torch(path)["outputs"]
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=False)
        outputs = [[] for _ in range(views)]
        for x, _ in storage.progress_bar(loader, desc="teacher outputs", leave=False):
            x = x.to(self.device)
            for view in range(views):
                outputs[view].append(self.teacher_logits(x.flip(-1) if view else x).cpu())
        outputs = torch.stack([torch.cat(o) for o in outputs])
        storage.save_torch(path, {"outputs": outputs, "config": asdict(self.config), "views": views})
        return outputs
