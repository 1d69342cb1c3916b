"""RQ3: evaluation sets prepared once, and every checkpoint's decisions on them.

An evaluation set is a list of ``Condition`` s (a dataset, one of its conditions, its images and their
table) plus how a model's output becomes a decision: the 16-class mapping for ImageNet models on the
model-vs-human images, the model's own classes for the embedded default. Everything that does not
depend on the weights (loading, distorting) is done once; ``evaluate`` then loads each checkpoint once
(the analyses' checkpoint loop, ``lib.analysis``: with ``state_dir`` an interrupted run resumes) and runs
all its conditions in batches, identical image sets (e.g. the greyscale control shared by several
distortions) only once. ``lib.align.metrics`` turns the decisions into each checkpoint's row.

:func:`configure` checks and parses the stage's parameters once, into the :class:`AlignRun` that notebook 05 runs
(:func:`evaluation_set`, :func:`decide_checkpoints`); the stage's check (:func:`check_stage`) is the same call before
the notebook starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from lib import analysis
from lib import distributed as dd
from lib.align.distortions import check_conditions, distort
from lib.align.methods import CATEGORIES, ImageNetTo16Classes, OwnClasses
from lib.analysis import Scored, digest

EMBEDDED_SPLITS = {"cue-conflict": "cue_conflict", "edge": "edge", "silhouette": "silhouette"}  # benchmark -> split

@dataclass(frozen=True)
class AlignRun:
    """RQ3's run with every parameter checked and parsed (:func:`configure`): what notebook 05 runs.

    The evaluation set (:func:`evaluation_set`): model-vs-human's ``datasets`` under ``mvh_root`` (at
    ``image_size`` px), or else the embedded default in ``data_dir``: its ``datasets`` (the first ``n_split`` images
    of each) and the ``distortions`` ({distortion: [condition, ...]}) of its first ``n_images`` test images (seeded
    by ``seed``; the eidolons at ``eidolon_size`` px with ``eidolon_fields`` fields). Every checkpoint of ``source``
    decides on it (:func:`decide_checkpoints`, ``batch_size`` images a pass, kept in ``state_dir``); ``accuracy_over``
    says how ``lib.align.metrics`` aggregates accuracy."""

    source: str
    data_dir: str | None = None
    mvh_root: str | None = None
    datasets: tuple[str, ...] = tuple(EMBEDDED_SPLITS)
    distortions: dict = field(default_factory=dict)
    n_images: int = 50
    n_split: int | None = None
    seed: int = 0
    eidolon_size: int | None = None
    eidolon_fields: int | None = None
    image_size: int = 224
    accuracy_over: str = "ood_conditions"
    batch_size: int = 256
    state_dir: str | None = None


def check_evaluation(data_dir, mvh_root, datasets, distortions) -> None:
    """The evaluation set's parameters (the embedded default's splits and distortions in ``data_dir``, or
    model-vs-human's datasets under ``mvh_root``), checked before anything is loaded."""
    from lib.data import modelvshuman as mvh

    if mvh_root:
        if distortions:
            raise ValueError("distortions apply to the embedded default; model-vs-human's parametric datasets are read "
                             "as released: with mvh_root list them in `datasets`")
        unknown = sorted(set(datasets) - set(mvh.DATASETS))
        if unknown:
            raise ValueError(f"unknown model-vs-human dataset(s) {unknown}; the 17 are {mvh.DATASETS}")
        return
    if not data_dir:
        raise ValueError("give data_dir (the embedded dataset) or mvh_root (model-vs-human)")
    check_conditions(distortions or {})
    unknown = [d for d in datasets if d not in EMBEDDED_SPLITS]
    if unknown:
        raise ValueError(f"the embedded dataset has no {unknown}; its evaluation splits are {list(EMBEDDED_SPLITS)}")


def configure(source, data_dir=None, mvh_root=None, datasets=tuple(EMBEDDED_SPLITS), distortions: dict | None = None,
              n_images: int = 50, n_split: int | None = None, seed: int = 0, eidolon_size: int | None = None,
              eidolon_fields: int | None = None, image_size: int = 224, accuracy_over: str = "ood_conditions",
              batch_size: int = 256, state_dir=None, exists: bool = True) -> AlignRun:
    """RQ3's one check and parse, before any compute: the parameters of notebook 05 as an :class:`AlignRun`.
    :func:`check_stage` calls it with ``exists`` False (before the notebook starts); the notebook with ``exists``
    True (``source`` is then a prune stage's output, every checkpoint the file that stage wrote) and runs what it
    returns."""
    from lib.align.metrics import ACCURACY_OVER
    from lib.params import check_at_least

    check_at_least({"n_split": n_split, "n_images": n_images, "batch_size": batch_size},
                   {"n_split": 1, "n_images": 1, "batch_size": 1})
    check_evaluation(data_dir, mvh_root, datasets, distortions)
    if accuracy_over not in ACCURACY_OVER:
        raise ValueError(f"unknown accuracy_over {accuracy_over!r}; choose one of {ACCURACY_OVER}")
    if exists:
        from lib.checkpoints import validate_source

        validate_source(source)
    return AlignRun(str(source), data_dir, mvh_root or None, tuple(datasets), dict(distortions or {}), n_images, n_split,
                    seed, eidolon_size, eidolon_fields, image_size, accuracy_over, batch_size,
                    None if state_dir is None else str(state_dir))


def check_stage(p: dict) -> list[tuple]:
    """The align stage's parameters, checked before any compute (:func:`configure`); returns the input paths it
    reads."""
    from pathlib import Path

    run = configure(p.get("source"), p["data_dir"], p["mvh_root"], p["datasets"], p["distortions"], p["n_images"],
                    p["n_split"], p["seed"], p["eidolon_size"], p["eidolon_fields"], p["image_size"],
                    p.get("accuracy_over", "ood_conditions"), p.get("batch_size", 256), exists=False)
    if not run.mvh_root:
        return []
    root = Path(run.mvh_root)
    if not root.exists():
        return [("mvh_root", root, "mvh")]
    found = {name: [c for c in (root / name, root / "datasets" / name) if c.is_dir()] for name in run.datasets}
    return [(f"datasets[{name}]", (dirs or [root / name])[0], "mvh") for name, dirs in found.items()]


@dataclass
class Condition:
    dataset: str
    condition: str
    images: np.ndarray          # uint8 (N, H, W, 3)
    table: pd.DataFrame         # image_id, category (and texture) per image

    def __post_init__(self):
        if len(self.images) != len(self.table):
            raise ValueError(f"{self.dataset}/{self.condition}: {len(self.images)} images, {len(self.table)} rows")


@dataclass
class EvaluationSet:
    conditions: list[Condition]
    categories: tuple[str, ...]
    imagenet16: bool            # decisions through the 16-class mapping of ImageNet-1k probabilities
    humans: pd.DataFrame | None = None
    info: dict = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(c.dataset for c in self.conditions))

    def decider(self, num_outputs: int):
        if self.imagenet16:
            if num_outputs != 1000:
                raise ValueError(f"the 16-class mapping needs ImageNet-1k outputs; the model has {num_outputs}")
            return ImageNetTo16Classes()
        if num_outputs != len(self.categories):
            raise ValueError(f"the model has {num_outputs} outputs but the evaluation set {len(self.categories)} "
                             "classes; evaluate checkpoints trained on this dataset")
        return OwnClasses(self.categories)


# ----------------------------------------------------------------------------- preparing the sets (once)
def prepare_embedded(data_dir, distortions: dict, n_images: int, datasets=tuple(EMBEDDED_SPLITS),
                     n_split: int | None = None, source_split: str = "test", seed: int = 0,
                     eidolon_size: int | None = None, eidolon_fields: int | None = None,
                     progress: bool = True) -> EvaluationSet:
    """The embedded default: its cue-conflict/edge/silhouette splits (the first ``n_split`` images) and the
    distortions of the first ``n_images`` of ``source_split`` (checked: :func:`check_evaluation`)."""
    from lib.storage import progress_bar as tqdm

    from lib.data import shapes

    classes = tuple(shapes.load_meta(data_dir)["classes"])
    out = []
    for dataset in datasets:
        split = EMBEDDED_SPLITS[dataset]
        arrays = shapes.load_split(data_dir, split)
        keep = slice(0, n_split)
        out.append(Condition(dataset, "0", arrays["images"][keep],
                             _table(split, arrays["labels"][keep], arrays["texture_labels"][keep], classes)))
    arrays = shapes.load_split(data_dir, source_split)
    images, labels = arrays["images"][:n_images], arrays["labels"][:n_images]
    table = _table(source_split, labels, labels, classes).drop(columns="texture")
    jobs = [(name, str(c)) for name, conditions in distortions.items() for c in conditions]
    for name, condition in tqdm(jobs, desc="distortions", disable=not progress):
        distorted = distort(images, name, condition, seed=seed, eidolon_size=eidolon_size,
                            eidolon_fields=eidolon_fields)
        out.append(Condition(name, condition, distorted, table))
    return EvaluationSet(out, classes, imagenet16=False, info={"data_dir": str(data_dir)})


def _table(split, labels, texture_labels, classes) -> pd.DataFrame:
    names = np.asarray(classes)
    return pd.DataFrame({"image_id": [f"{split}_{i:05d}" for i in range(len(labels))],
                         "category": names[labels], "texture": names[texture_labels]})


def prepare_modelvshuman(root, datasets=("cue-conflict", "edge", "silhouette"), size: int = 224,
                         progress: bool = True) -> EvaluationSet:
    """Model-vs-human datasets in their released layout, with the human observers' trials where present."""
    from lib.data import modelvshuman as mvh

    for name in datasets:
        mvh.dataset_dir(root, name)  # fail before loading anything if one is missing
    out, humans = [], []
    for name in datasets:
        images, table = mvh.load_images(root, name, size=size, progress=progress)
        for condition, part in table.groupby("condition", sort=False):
            out.append(Condition(name, str(condition), images[part.index.to_numpy()], part.reset_index(drop=True)))
        try:
            humans.append(mvh.load_human_trials(root, name).assign(dataset=name))
        except FileNotFoundError:
            pass  # no human data for this dataset: accuracy only
    trials = pd.concat(humans, ignore_index=True) if humans else None
    return EvaluationSet(out, CATEGORIES, imagenet16=True, humans=trials, info={"root": str(root)})


def prepare(data_dir=None, mvh_root=None, datasets=tuple(EMBEDDED_SPLITS), distortions=None, n_images: int = 50,
            n_split: int | None = None, seed: int = 0, eidolon_size: int | None = None,
            eidolon_fields: int | None = None, image_size: int = 224, progress: bool = True) -> EvaluationSet:
    """The evaluation set of a stage: model-vs-human's datasets and observers when ``mvh_root`` is given,
    else the embedded default's splits and distortions (:func:`check_evaluation`, then :func:`load_evaluation`)."""
    check_evaluation(data_dir, mvh_root, datasets, distortions)
    return load_evaluation(data_dir, mvh_root, datasets, distortions, n_images, n_split, seed, eidolon_size,
                           eidolon_fields, image_size, progress)


def evaluation_set(run: AlignRun, progress: bool = True) -> EvaluationSet:
    """The evaluation set of a checked :class:`AlignRun`, prepared once for all its checkpoints."""
    return load_evaluation(run.data_dir, run.mvh_root, run.datasets, run.distortions, run.n_images, run.n_split,
                           run.seed, run.eidolon_size, run.eidolon_fields, run.image_size, progress)


def load_evaluation(data_dir, mvh_root, datasets, distortions, n_images, n_split, seed, eidolon_size, eidolon_fields,
                    image_size, progress) -> EvaluationSet:
    """:func:`prepare` with its parameters already checked."""
    if mvh_root:
        return prepare_modelvshuman(mvh_root, datasets, image_size, progress)
    return prepare_embedded(data_dir, distortions or {}, n_images, datasets, n_split, seed=seed,
                            eidolon_size=eidolon_size, eidolon_fields=eidolon_fields, progress=progress)


# ----------------------------------------------------------------------------- every checkpoint's decisions
def _digest(images: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(images).view(np.uint8)).hexdigest()


@torch.inference_mode()
def decide(model: torch.nn.Module, images: np.ndarray, mean, std, decider_for, batch_size: int = 256,
           device=None) -> np.ndarray:
    """Decisions for uint8 images (N, H, W, 3): batched forward, softmax, then ``decider_for(num_outputs)``."""
    from lib.data.transforms import normalize, to_tensor

    device = device or next(model.parameters()).device
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on CPU, harmless elsewhere
    indices = np.asarray(list(dd.shard(len(images))), dtype=np.int64)
    scores = []
    for start in range(0, len(indices), batch_size):
        x = normalize(to_tensor(images[indices[start:start + batch_size]]).to(device), mean, std)
        scores.append(torch.softmax(model(x.contiguous(memory_format=torch.channels_last)).float(), dim=1).cpu().numpy())
    if not scores:  # more ranks than images
        return _gather(indices, np.array([], dtype=object), len(images))
    scores = np.concatenate(scores)
    return _gather(indices, decider_for(scores.shape[1])(scores), len(images))


def _gather(indices: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    if not dd.is_distributed():
        return values
    import torch.distributed as dist

    parts = [None] * dd.world_size()
    dist.all_gather_object(parts, (indices, values))
    out = np.empty(n, dtype=object)
    for idx, vals in parts:
        out[idx] = vals
    return out


def evaluate(source, evaluation: EvaluationSet, batch_size: int = 256, progress: bool = True, state_dir=None):
    """(records, trials): every checkpoint of ``source`` (checked: a prune stage's output) on every condition, one
    model load per checkpoint. state_dir: where each finished checkpoint is kept, so that a rerun after an
    interruption resumes (``lib.analysis``)."""
    from lib.checkpoints import validate_source

    validate_source(source)
    return decisions(source, evaluation, batch_size, progress, state_dir)


def decide_checkpoints(run: AlignRun, evaluation: EvaluationSet, progress: bool = True):
    """(records, trials) of a checked :class:`AlignRun`: :func:`evaluate` of its source on ``evaluation``."""
    return decisions(run.source, evaluation, run.batch_size, progress, run.state_dir)


def decisions(source, evaluation: EvaluationSet, batch_size: int, progress: bool, state_dir):
    """:func:`evaluate` with ``source`` already checked."""
    from lib.models import get_spec

    # identical image sets are evaluated once (e.g. the greyscale control of several distortions)
    unique, keys = {}, []
    for condition in evaluation.conditions:
        keys.append(_digest(condition.images))
        unique.setdefault(keys[-1], condition.images)
    order = list(unique)
    stacked = np.concatenate([unique[k] for k in order])
    bounds = np.cumsum([0] + [len(unique[k]) for k in order])
    device = dd.default_device()
    key = {"images": keys, "tables": digest(*(c.table for c in evaluation.conditions)),
           "conditions": [(c.dataset, c.condition) for c in evaluation.conditions],
           "categories": list(evaluation.categories), "imagenet16": evaluation.imagenet16,
           "batch_size": batch_size}

    def score(record: dict, model) -> Scored:
        spec = get_spec(record["model"])
        decided = decide(model, stacked, spec.mean, spec.std, evaluation.decider, batch_size, device)
        by_key = {k: decided[bounds[i]:bounds[i + 1]] for i, k in enumerate(order)}
        frames = [condition.table.assign(subj=f"step_{record['step']:02d}", step=record["step"],
                                         sparsity=record["sparsity"], dataset=condition.dataset,
                                         condition=condition.condition, object_response=by_key[key])
                  for condition, key in zip(evaluation.conditions, keys)]
        return Scored({}, pd.concat(frames, ignore_index=True))

    done = analysis.score_checkpoints(source, score, key, state_dir, device=device, progress=progress)
    return done.records, done.items


def save_observer_trials(out_dir, humans: pd.DataFrame | None, trials: pd.DataFrame):
    """Write ``<out_dir>/human_trials.csv``: the observers' trials matched with the model's
    (:func:`lib.align.metrics.observer_trials`), for the report's test of ``ec_humans``; returns its path, or None
    where the stimuli come without observers (the embedded default), and then a file of an earlier run in the
    same folder is removed, so that the report never compares with observers of other stimuli.

    Not a declared DVC output: the embedded default writes none, and the report reads it where present."""
    from pathlib import Path

    from lib import storage
    from lib.align.metrics import HUMAN_TRIALS, observer_trials

    path = Path(out_dir) / HUMAN_TRIALS
    matched = observer_trials(humans, trials)
    if matched is None:
        path.unlink(missing_ok=True)  # every rank under torchrun may: none writes it
        return None
    return storage.write_bytes(path, matched.to_csv(index=False).encode())
