"""Model-vs-human's behavioural metrics, one small class each, on trial tables.

A trial table has one row per (observer, image) decision in the layout of the benchmark's raw-data
CSVs: ``subj``, ``object_response`` (the decision), ``category`` (the correct class: for cue-conflict
the shape's), ``condition`` and ``image_id`` (the stimulus file name without the experiment prefix);
cue-conflict tables add ``texture`` (the texture's class). Models and humans are written the same
way, so every metric compares any two decision makers (``modelvshuman/plotting/analyses.py``).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd


def _check(trials: pd.DataFrame, columns=("object_response", "category")) -> None:
    if len(trials) == 0:
        raise ValueError("empty trial table")
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise ValueError(f"trial table lacks column(s) {missing}; it has {list(trials.columns)}")


def is_correct(trials: pd.DataFrame) -> np.ndarray:
    return (trials["object_response"] == trials["category"]).to_numpy()


class Accuracy:
    """16-class accuracy (or own-class accuracy): share of trials whose decision is the correct class."""

    name = "16-class-accuracy"

    def analysis(self, trials: pd.DataFrame) -> dict:
        _check(trials)
        return {self.name: float(is_correct(trials).mean())}


class AccuracyDifference:
    """The benchmark's accuracy difference between two decision makers: the *squared* difference."""

    name = "16-class-accuracy-difference"

    def analysis(self, trials_1: pd.DataFrame, trials_2: pd.DataFrame) -> dict:
        _check(trials_1)
        _check(trials_2)
        return {self.name: float((is_correct(trials_1).mean() - is_correct(trials_2).mean()) ** 2)}


class ShapeBias:
    """Geirhos et al. 2019: shape decisions / (shape + texture decisions) on cue-conflict trials.

    Trials whose shape and texture class agree carry no conflict and are excluded; the fractions are of
    all trials, as the benchmark reports them. NaN when no trial was answered with either cue.
    """

    name = "shape-bias"

    def analysis(self, trials: pd.DataFrame) -> dict:
        _check(trials, ("object_response", "category", "texture"))
        conflict = trials[trials["category"] != trials["texture"]]
        shape = float((conflict["object_response"] == conflict["category"]).sum() / len(trials))
        texture = float((conflict["object_response"] == conflict["texture"]).sum() / len(trials))
        bias = shape / (shape + texture) if shape + texture > 0 else float("nan")
        return {"fraction-correct-shape": shape, "fraction-correct-texture": texture, self.name: bias}


def aligned(trials_1: pd.DataFrame, trials_2: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Trial-wise correctness of two decision makers on the same images, matched by ``image_id``."""
    for trials in (trials_1, trials_2):
        _check(trials, ("object_response", "category", "image_id"))
        if trials["image_id"].duplicated().any():
            raise ValueError("a decision maker saw an image twice in one condition; compare one condition at a time")
    a = trials_1.assign(correct=is_correct(trials_1)).set_index("image_id")["correct"]
    b = trials_2.assign(correct=is_correct(trials_2)).set_index("image_id")["correct"]
    if len(a) != len(b) or not a.index.isin(b.index).all():
        raise ValueError(f"the two decision makers saw different images ({len(a)} vs {len(b)} trials, "
                         f"{int((~a.index.isin(b.index)).sum())} unmatched); error consistency needs the same trials")
    return a.to_numpy(), b.reindex(a.index).to_numpy()


class ErrorConsistency:
    """Geirhos, Meding & Wichmann 2020: Cohen's kappa of trial-wise correctness.

    observed = share of trials both got right or both got wrong; expected = p1 p2 + (1 - p1)(1 - p2)
    from the two accuracies alone; kappa = (observed - expected) / (1 - expected), 1 when observed is 1.
    """

    name = "error-consistency"

    def analysis(self, trials_1: pd.DataFrame, trials_2: pd.DataFrame) -> dict:
        c1, c2 = aligned(trials_1, trials_2)
        p1, p2 = c1.mean(), c2.mean()
        expected = p1 * p2 + (1 - p1) * (1 - p2)
        observed = float((c1 == c2).mean())
        kappa = 1.0 if observed == 1.0 else (observed - expected) / (1 - expected)
        return {"expected-consistency": float(expected), "observed-consistency": observed, self.name: float(kappa)}


def compare(model: pd.DataFrame, humans: pd.DataFrame) -> pd.DataFrame:
    """One row per (human, condition): accuracy difference, observed and error consistency of ``model``."""
    rows = []
    for (subject, condition), human in humans.groupby(["subj", "condition"], sort=True):
        mine = model[model["condition"] == condition]
        rows.append({"subj": subject, "condition": condition,
                     **AccuracyDifference().analysis(mine, human), **ErrorConsistency().analysis(mine, human)})
    return pd.DataFrame(rows)


def human_ceiling(humans: pd.DataFrame) -> pd.DataFrame:
    """Every pair of human observers compared as above (per condition): the human-to-human ceiling."""
    rows = []
    for condition, part in humans.groupby("condition", sort=True):
        by_subject = dict(tuple(part.groupby("subj", sort=True)))
        for s1, s2 in combinations(sorted(by_subject), 2):
            rows.append({"subj": s1, "other": s2, "condition": condition,
                         **AccuracyDifference().analysis(by_subject[s1], by_subject[s2]),
                         **ErrorConsistency().analysis(by_subject[s1], by_subject[s2])})
    return pd.DataFrame(rows)


def per_observer(pairs: pd.DataFrame, column: str = "error-consistency") -> pd.Series:
    """Each human's mean agreement with the other humans (the benchmark's human value is their mean)."""
    both = pd.concat([pairs[["subj", column]], pairs[["other", column]].rename(columns={"other": "subj"})])
    return both.groupby("subj")[column].mean()


# ----------------------------------------------------------------------------- a dataset's value
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


def aggregate(dataset: str, values: dict) -> float:
    """A dataset's value: the mean over its conditions the benchmark aggregates (NaN if none was run)."""
    kept = [v for c, v in values.items() if c not in EXCLUDED_CONDITIONS.get(dataset, ())]
    return float(np.mean(kept)) if kept else float("nan")


# ----------------------------------------------------------------------------- per checkpoint
def checkpoint_rows(records: list[dict], trials: pd.DataFrame, humans: pd.DataFrame | None = None,
                    accuracy_over: str = "ood_conditions") -> list[dict]:
    """One flat row per checkpoint: accuracy per dataset and condition, shape bias, consistency with humans
    (where their trials exist) and with the dense model (step 0; model-to-model, not a human measure).

    A dataset's value (``acc/<dataset>``, ``ec/<dataset>``, ...) is the mean over its conditions without the
    benchmark's excluded ones (``EXCLUDED_CONDITIONS``); every condition's accuracy is kept as well.
    ``accuracy_over="all_images"``: ``acc/<dataset>`` is instead the share of all of the dataset's images
    classified correctly, the control conditions included (Study A's per-dataset value: the toolbox's top-1
    16-class accuracy over every image of the dataset); the consistency values keep the benchmark's aggregation.
    Both aggregations are in every row whatever ``accuracy_over`` says: ``acc_all_images/<dataset>`` and their
    mean ``ood_acc_all_images`` are Study A's (the decisions are the same; only the mean differs).
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
            accuracy = {c: Accuracy().analysis(p)["16-class-accuracy"] for c, p in conditions.items()}
            every_image = Accuracy().analysis(part)["16-class-accuracy"]  # Study A's value, reported in every run
            row[f"acc/{dataset}"] = aggregate(dataset, accuracy) if accuracy_over == "ood_conditions" else every_image
            row[f"acc_all_images/{dataset}"] = every_image
            if len(accuracy) > 1:
                row.update({f"acc/{dataset}/{c}": v for c, v in accuracy.items()})
            if dataset == "cue-conflict":
                bias = ShapeBias().analysis(part)
                row.update(shape_bias=bias["shape-bias"], frac_shape=bias["fraction-correct-shape"],
                           frac_texture=bias["fraction-correct-texture"])
            reference = dense[dense["dataset"] == dataset]
            row[f"ec_dense/{dataset}"] = aggregate(dataset, {
                c: ErrorConsistency().analysis(p, reference[reference["condition"] == c])["error-consistency"]
                for c, p in conditions.items()})
            if humans is not None and dataset in set(humans["dataset"]):
                versus = compare(part, humans[humans["dataset"] == dataset]).groupby("condition").mean(
                    numeric_only=True)  # mean over the observers, per condition
                for column, key in (("error-consistency", "ec"), ("observed-consistency", "obs_cons"),
                                    ("16-class-accuracy-difference", "acc_diff")):
                    row[f"{key}/{dataset}"] = aggregate(dataset, versus[column].to_dict())
        datasets = mine["dataset"].unique()
        row["ood_acc"] = float(np.nanmean([row[f"acc/{d}"] for d in datasets]))
        row["ood_acc_all_images"] = float(np.nanmean([row[f"acc_all_images/{d}"] for d in datasets]))
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
            c: Accuracy().analysis(d)["16-class-accuracy"] for c, d in trials.groupby("condition")})
            for subject, trials in part.groupby("subj")})
        summary = {"observers": int(part["subj"].nunique()), "accuracy": float(accuracy.mean()),
                   "accuracy_min": float(accuracy.min()), "accuracy_max": float(accuracy.max())}
        if dataset == "cue-conflict":
            per_subject = part.groupby("subj").apply(lambda d: ShapeBias().analysis(d)["shape-bias"])
            summary.update(shape_bias=ShapeBias().analysis(part)["shape-bias"],
                           shape_bias_min=float(per_subject.min()), shape_bias_max=float(per_subject.max()))
        pairs = human_ceiling(part)
        if len(pairs):
            for column, key in (("error-consistency", "error_consistency"),
                                ("observed-consistency", "observed_consistency"),
                                ("16-class-accuracy-difference", "accuracy_difference")):
                per_condition = pd.DataFrame({c: per_observer(p, column) for c, p in pairs.groupby("condition")})
                by_observer = per_condition.apply(lambda r: aggregate(dataset, r.to_dict()), axis=1)
                summary[key] = float(by_observer.mean())
                if key == "error_consistency":
                    summary.update(error_consistency_min=float(by_observer.min()),
                                   error_consistency_max=float(by_observer.max()),
                                   error_consistency_pairs_min=float(pairs[column].min()),
                                   error_consistency_pairs_max=float(pairs[column].max()))
        out[dataset] = summary
    return out


def per_image(trials: pd.DataFrame, accuracy_over: str = "ood_conditions") -> pd.DataFrame:
    """The per-(checkpoint, trial) table the report resamples: ``trial`` names the image in its dataset and
    condition; ``ood_score``'s mean over a checkpoint's trials is its ``ood_acc`` (see :func:`ood_weights`), and
    ``ood_score_all_images``'s its ``ood_acc_all_images``."""
    columns = ["step", "sparsity", "dataset", "condition", "image_id", "category", "object_response"]
    out = trials[columns + (["texture"] if "texture" in trials else [])].copy()
    out["correct"] = (out["object_response"] == out["category"]).astype(int)
    out.insert(0, "trial", trial_key(out))
    out["ood_score"] = out["correct"] * ood_weights(out, accuracy_over)
    out["ood_score_all_images"] = out["correct"] * ood_weights(out, "all_images")
    return out


def trial_key(trials: pd.DataFrame) -> pd.Series:
    """The name of each trial's image in its dataset and condition, ``<dataset>/<condition>/<image_id>``: the key of
    :func:`per_image`'s ``trial``, by which the report matches the observers' trials (:func:`observer_trials`)."""
    return trials["dataset"].astype(str) + "/" + trials["condition"].astype(str) + "/" + trials["image_id"].astype(str)


# The observers' trials the stage writes beside its per-trial table (:func:`observer_trials`), for the report's
# swap test of ec_humans; lib.report reads them under this name (its HUMAN_TRIALS).
HUMAN_TRIALS = "human_trials.csv"
HUMAN_TRIAL_COLUMNS = ("subj", "dataset", "condition", "image_id", "category", "object_response")


def observer_trials(humans: pd.DataFrame | None, trials: pd.DataFrame) -> pd.DataFrame | None:
    """The human observers' trials behind ``ec_humans`` (:data:`HUMAN_TRIAL_COLUMNS`), or None without observers:
    those of an image the model decided in the same dataset and condition (:func:`trial_key`), in the conditions
    a dataset's value aggregates (:data:`EXCLUDED_CONDITIONS` left out, as :func:`checkpoint_rows` does).

    With them the report recomputes ``ec_humans`` from any checkpoint's decisions: per (dataset, condition) the
    mean over observers of each one's kappa on the trials both saw, per dataset the mean over its conditions, then
    the mean over datasets. Values are kept as the stage holds them (strings), so that the key matches."""
    if humans is None or len(humans) == 0:
        return None
    kept = humans[[c not in EXCLUDED_CONDITIONS.get(d, ()) for d, c in zip(humans["dataset"], humans["condition"])]]
    matched = kept[trial_key(kept).isin(set(trial_key(trials)))]
    if matched.empty:
        return None
    return matched[list(HUMAN_TRIAL_COLUMNS)].astype(str).reset_index(drop=True)


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
