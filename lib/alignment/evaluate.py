"""RQ3 end to end: evaluation sets prepared once, every checkpoint's decisions, the per-checkpoint analyses.

An evaluation set is a list of ``Condition`` s (a dataset, one of its conditions, its images and their
table) plus how a model's output becomes a decision: the 16-class mapping for ImageNet models on the
model-vs-human images, the model's own classes for the embedded default. Everything that does not
depend on the weights (loading, distorting) is done once; ``evaluate`` then loads each checkpoint once
and runs all its conditions in batches, identical image sets (e.g. the greyscale control shared by
several distortions) only once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from lib import distributed as dd
from lib.alignment import metrics
from lib.alignment.categories import CATEGORIES, ImageNetTo16Classes, OwnClasses
from lib.alignment.distortions import DISTORTIONS, check_conditions, distort

EMBEDDED_SPLITS = {"cue-conflict": "cue_conflict", "edge": "edge", "silhouette": "silhouette"}  # benchmark -> split

# Left out of a dataset's aggregate values (modelvshuman/plotting/plot.py EXCLUDE_CONDITIONS): the control
# condition (not out of distribution) and conditions where the humans' mean accuracy is below 0.2.
EXCLUDED_CONDITIONS = {
    "colour": ["cr"], "contrast": ["c100", "c03", "c01"], "high-pass": ["inf", "0.55", "0.45", "0.4"],
    "low-pass": ["0", "15", "40"], "phase-scrambling": ["0", "150", "180"], "power-equalisation": ["0"],
    "false-colour": ["True"], "rotation": ["0"], "eidolonI": ["1-10-10", "64-10-10", "128-10-10"],
    "eidolonII": ["1-3-10", "32-3-10", "64-3-10", "128-3-10"],
    "eidolonIII": ["1-0-10", "16-0-10", "32-0-10", "64-0-10", "128-0-10"],
    "uniform-noise": ["0.0", "0.6", "0.9"],
}


ACCURACY_OVER = ("ood_conditions", "all_images")


def check_stage(p: dict) -> list[tuple]:
    """The alignment stage's parameters, checked before any compute; returns the input paths it reads."""
    from pathlib import Path

    from lib.data import modelvshuman as mvh

    if not p["mvh_root"]:
        check_conditions(p["distortions"] or {})
        return []
    if p["distortions"]:
        raise ValueError("distortions apply to the embedded default; with mvh_root list the benchmark's parametric "
                         "datasets in `datasets`")
    unknown = sorted(set(p["datasets"]) - set(mvh.DATASETS))
    if unknown:
        raise ValueError(f"unknown model-vs-human dataset(s) {unknown}; the 17 are {mvh.DATASETS}")
    root = Path(p["mvh_root"])
    if not root.exists():
        return [("mvh_root", root, "mvh")]
    found = {name: [c for c in (root / name, root / "datasets" / name) if c.is_dir()] for name in p["datasets"]}
    return [(f"datasets[{name}]", (dirs or [root / name])[0], "mvh") for name, dirs in found.items()]


def aggregate(dataset: str, values: dict) -> float:
    """A dataset's value: the mean over its conditions the benchmark aggregates (NaN if none was run)."""
    kept = [v for c, v in values.items() if c not in EXCLUDED_CONDITIONS.get(dataset, ())]
    return float(np.mean(kept)) if kept else float("nan")


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
    distortions of the first ``n_images`` of ``source_split``."""
    from lib.io import progress_bar as tqdm

    from lib.data import shapes

    check_conditions(distortions)
    unknown = [d for d in datasets if d not in EMBEDDED_SPLITS]
    if unknown:
        raise ValueError(f"the embedded dataset has no {unknown}; its evaluation splits are {list(EMBEDDED_SPLITS)}")
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
    else the embedded default's splits and distortions."""
    if mvh_root:
        if distortions:
            raise ValueError("distortions apply to the embedded default; model-vs-human's parametric datasets "
                             "are read as released (list them in datasets)")
        return prepare_modelvshuman(mvh_root, datasets, image_size, progress)
    if not data_dir:
        raise ValueError("give data_dir (the embedded dataset) or mvh_root (model-vs-human)")
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


def evaluate(source, evaluation: EvaluationSet, batch_size: int = 256, progress: bool = True):
    """(records, trials): every checkpoint of ``source`` on every condition, one model load per checkpoint."""
    from lib.io import progress_bar as tqdm

    from lib.checkpoints import iter_checkpoints, validate_source
    from lib.models import get_spec

    validate_source(source)
    # identical image sets are evaluated once (e.g. the greyscale control of several distortions)
    unique, keys = {}, []
    for condition in evaluation.conditions:
        keys.append(_digest(condition.images))
        unique.setdefault(keys[-1], condition.images)
    order = list(unique)
    stacked = np.concatenate([unique[k] for k in order])
    bounds = np.cumsum([0] + [len(unique[k]) for k in order])
    device = dd.default_device()
    records, frames = [], []
    for record, model in tqdm(iter_checkpoints(source), desc="checkpoints", disable=not progress):
        spec = get_spec(record["model"])
        decisions = decide(model.to(device), stacked, spec.mean, spec.std, evaluation.decider, batch_size, device)
        by_key = {k: decisions[bounds[i]:bounds[i + 1]] for i, k in enumerate(order)}
        for condition, key in zip(evaluation.conditions, keys):
            frames.append(condition.table.assign(subj=f"step_{record['step']:02d}", step=record["step"],
                                                 sparsity=record["sparsity"], dataset=condition.dataset,
                                                 condition=condition.condition, object_response=by_key[key]))
        records.append(record)
        del model
    return records, pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- analyses
def checkpoint_rows(records: list[dict], trials: pd.DataFrame, humans: pd.DataFrame | None = None,
                    accuracy_over: str = "ood_conditions") -> list[dict]:
    """One flat row per checkpoint: accuracy per dataset and condition, shape bias, consistency with humans
    (where their trials exist) and with the dense model (step 0; model-to-model, not a human measure).

    A dataset's value (``acc/<dataset>``, ``ec/<dataset>``, ...) is the mean over its conditions without the
    benchmark's excluded ones (``EXCLUDED_CONDITIONS``); every condition's accuracy is kept as well.
    ``accuracy_over="all_images"``: ``acc/<dataset>`` is instead the share of all of the dataset's images
    classified correctly, the control conditions included (Study A's per-dataset value: the toolbox's top-1
    16-class accuracy over every image of the dataset); the consistency values keep the benchmark's aggregation.
    """
    if accuracy_over not in ACCURACY_OVER:
        raise ValueError(f"unknown accuracy_over {accuracy_over!r}; choose one of {ACCURACY_OVER}")
    rows = []
    dense = trials[trials["step"] == min(r["step"] for r in records)]
    for record in records:
        mine = trials[trials["step"] == record["step"]]
        row = {"step": record["step"], "sparsity": record["sparsity"], "test_acc": record.get("test_acc")}
        for dataset, part in mine.groupby("dataset", sort=False):
            conditions = dict(tuple(part.groupby("condition", sort=False)))
            accuracy = {c: metrics.Accuracy().analysis(p)["16-class-accuracy"] for c, p in conditions.items()}
            row[f"acc/{dataset}"] = (aggregate(dataset, accuracy) if accuracy_over == "ood_conditions"
                                     else metrics.Accuracy().analysis(part)["16-class-accuracy"])
            if len(accuracy) > 1:
                row.update({f"acc/{dataset}/{c}": v for c, v in accuracy.items()})
            if dataset == "cue-conflict":
                bias = metrics.ShapeBias().analysis(part)
                row.update(shape_bias=bias["shape-bias"], frac_shape=bias["fraction-correct-shape"],
                           frac_texture=bias["fraction-correct-texture"])
            reference = dense[dense["dataset"] == dataset]
            row[f"ec_dense/{dataset}"] = aggregate(dataset, {
                c: metrics.ErrorConsistency().analysis(p, reference[reference["condition"] == c])["error-consistency"]
                for c, p in conditions.items()})
            if humans is not None and dataset in set(humans["dataset"]):
                versus = metrics.compare(part, humans[humans["dataset"] == dataset]).groupby("condition").mean(
                    numeric_only=True)  # mean over the observers, per condition
                for column, key in (("error-consistency", "ec"), ("observed-consistency", "obs_cons"),
                                    ("16-class-accuracy-difference", "acc_diff")):
                    row[f"{key}/{dataset}"] = aggregate(dataset, versus[column].to_dict())
        datasets = mine["dataset"].unique()
        row["ood_acc"] = float(np.nanmean([row[f"acc/{d}"] for d in datasets]))
        row["ec_dense"] = float(np.nanmean([row[f"ec_dense/{d}"] for d in datasets]))
        human_ec = [v for k, v in row.items() if k.startswith("ec/")]
        if human_ec:
            row["ec_humans"] = float(np.nanmean(human_ec))
        rows.append(row)
    return rows


def human_summary(humans: pd.DataFrame | None) -> dict:
    """Per dataset: the observers' accuracy, shape bias and mutual consistency (the human ceiling).

    ``shape_bias`` pools all observers' trials (the benchmark's "humans" decision maker); the ranges are
    per-observer values; ``error_consistency`` is the mean over observers of each one's mean kappa with
    the others (the benchmark's human value), min/max the range of those per-observer means. Conditions
    are aggregated as in ``checkpoint_rows``.
    """
    out = {}
    if humans is None:
        return out
    for dataset, part in humans.groupby("dataset", sort=False):
        accuracy = pd.Series({subject: aggregate(dataset, {
            c: metrics.Accuracy().analysis(d)["16-class-accuracy"] for c, d in trials.groupby("condition")})
            for subject, trials in part.groupby("subj")})
        summary = {"observers": int(part["subj"].nunique()), "accuracy": float(accuracy.mean()),
                   "accuracy_min": float(accuracy.min()), "accuracy_max": float(accuracy.max())}
        if dataset == "cue-conflict":
            per_subject = part.groupby("subj").apply(lambda d: metrics.ShapeBias().analysis(d)["shape-bias"])
            summary.update(shape_bias=metrics.ShapeBias().analysis(part)["shape-bias"],
                           shape_bias_min=float(per_subject.min()), shape_bias_max=float(per_subject.max()))
        pairs = metrics.human_ceiling(part)
        if len(pairs):
            for column, key in (("error-consistency", "error_consistency"),
                                ("observed-consistency", "observed_consistency"),
                                ("16-class-accuracy-difference", "accuracy_difference")):
                per_condition = pd.DataFrame({c: metrics.per_observer(p, column) for c, p in pairs.groupby("condition")})
                per_observer = per_condition.apply(lambda r: aggregate(dataset, r.to_dict()), axis=1)
                summary[key] = float(per_observer.mean())
                if key == "error_consistency":
                    summary.update(error_consistency_min=float(per_observer.min()),
                                   error_consistency_max=float(per_observer.max()),
                                   error_consistency_pairs_min=float(pairs[column].min()),
                                   error_consistency_pairs_max=float(pairs[column].max()))
        out[dataset] = summary
    return out


def per_image(trials: pd.DataFrame, accuracy_over: str = "ood_conditions") -> pd.DataFrame:
    """The per-(checkpoint, trial) table the report resamples: ``trial`` names the image in its dataset and
    condition; ``ood_score``'s mean over a checkpoint's trials is its ``ood_acc`` (see :func:`ood_weights`)."""
    columns = ["step", "sparsity", "dataset", "condition", "image_id", "category", "object_response"]
    out = trials[columns + (["texture"] if "texture" in trials else [])].copy()
    out["correct"] = (out["object_response"] == out["category"]).astype(int)
    out.insert(0, "trial", out["dataset"].astype(str) + "/" + out["condition"].astype(str) + "/"
               + out["image_id"].astype(str))
    out["ood_score"] = out["correct"] * ood_weights(out, accuracy_over)
    return out


def ood_weights(trials: pd.DataFrame, accuracy_over: str = "ood_conditions") -> pd.Series:
    """Per trial, the weight that makes the mean of ``correct x weight`` over a checkpoint's trials equal
    ``ood_acc``: the mean over datasets of the mean over their aggregated conditions of the accuracy
    (:func:`aggregate`; ``accuracy_over="all_images"``: of the share of all of a dataset's images, as
    :func:`checkpoint_rows`). Trials that do not enter ``ood_acc`` (excluded conditions) get NaN."""
    first = trials[trials["step"] == trials["step"].iloc[0]]
    if accuracy_over == "all_images":
        kept = first.assign(condition="all")
    else:
        kept = first[[c not in EXCLUDED_CONDITIONS.get(d, ()) for d, c in zip(first["dataset"], first["condition"])]]
    per_condition = kept.groupby(["dataset", "condition"]).size()
    conditions = per_condition.groupby(level="dataset").size()
    weight = {(d, c): 1.0 / (len(conditions) * conditions[d] * n) for (d, c), n in per_condition.items()}
    if accuracy_over == "all_images":
        weight = {(d, c): weight[(d, "all")] for d, c in zip(first["dataset"], first["condition"])}
    total = len(kept)
    return pd.Series([weight.get((d, c), np.nan) * total for d, c in zip(trials["dataset"], trials["condition"])],
                     index=trials.index)


def distortion_levels(distortions: dict) -> dict:
    """The selected conditions of every distortion in the benchmark's order (for plotting curves)."""
    check_conditions(distortions)
    return {name: [c for c in DISTORTIONS[name].conditions if c in {str(v) for v in conditions}]
            for name, conditions in distortions.items()}
