"""From every (seed, checkpoint, image) prediction to what pruning forgets: flips, PIEs, per-class changes.

Input: the predictions table (one row per seed, checkpoint ``step`` and ``image``: ``label``, ``prediction``,
``correct``; what :func:`lib.forget.run.forget` writes as ``predictions.csv``). Every function here reads that
table only, so a reader can recompute the stage's numbers from the committed file.

- :func:`per_image`: one row per (step, image): the share of seeds whose prediction flipped from their own dense
  network's (``flip``), the share correct, the modal labels of the step's and of the dense population and
  whether the image is a PIE (``pie``; NaN with fewer than two seeds: PIEs need a population).
- :func:`class_changes`: one row per (step, class): accuracy of the class over the dense and over the pruned
  population, its change, and Welch's t test over seeds of the class's accuracy *relative to the network's
  overall accuracy* (class accuracy minus top-1, per network: a class is flagged when pruning hurts it more,
  or less, than the whole test set, Hooker et al.'s question), p-values adjusted over the classes of the step
  (Holm by default, ``lib.stats.adjust``). NaN where a population has one seed or no spread.
- :func:`checkpoint_rows`: the stage's rows of ``metrics.json`` (``flip_share``, ``pie_share``, ``classes_hurt``...).
- :func:`most_forgotten`: the images pruning gives up first and most often (the gallery's).
- :func:`join_dimensions`: the per-image table joined with RQ1/RQ2's per-image tables on (step, image).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from lib.forget.methods import MIN_POPULATION, modal_label

PREDICTION_COLUMNS = ("seed", "step", "image", "label", "prediction")


def _check_predictions(predictions: pd.DataFrame) -> None:
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"the predictions table lacks columns {missing}; it needs {list(PREDICTION_COLUMNS)}")
    if 0 not in set(predictions["step"]):
        raise ValueError("the predictions table has no dense checkpoint (step 0): flips and PIEs are measured "
                         "against it")
    if predictions.duplicated(["seed", "step", "image"]).any():
        raise ValueError("the predictions table holds a (seed, step, image) twice")
    per_seed = predictions.groupby("seed")["step"].apply(lambda s: tuple(sorted(set(s))))
    if per_seed.nunique() > 1:
        raise ValueError(f"the seeds' prune runs have different checkpoint steps {per_seed.to_dict()}: a population "
                         "needs every seed at every step (the same plan for every seed)")


def _matrix(predictions: pd.DataFrame, step, column: str = "prediction") -> pd.DataFrame:
    """(seeds, images) of one step's ``column``, seeds and images sorted."""
    part = predictions[predictions["step"] == step]
    return part.pivot(index="seed", columns="image", values=column).sort_index().sort_index(axis=1)


def with_flips(predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions with ``dense_prediction`` (the same seed's step-0 prediction) and ``flip`` (it differs)."""
    _check_predictions(predictions)
    dense = predictions.loc[predictions["step"] == 0, ["seed", "image", "prediction"]]
    out = predictions.merge(dense.rename(columns={"prediction": "dense_prediction"}), on=["seed", "image"],
                            how="left", validate="many_to_one")
    return out.assign(flip=(out["prediction"] != out["dense_prediction"]).astype(float))


def per_image(predictions: pd.DataFrame, num_classes: int | None = None) -> pd.DataFrame:
    """One row per (step, image); see the module docstring. ``num_classes``: for the modal labels' counts."""
    table = with_flips(predictions)
    table["correct"] = (table["prediction"] == table["label"]).astype(float)
    if "sparsity" not in table:
        table["sparsity"] = np.nan
    seeds = table["seed"].nunique()
    classes = int(num_classes or max(table["prediction"].max(), table["label"].max()) + 1)
    dense_modal = pd.Series(modal_label(_matrix(table, 0).to_numpy(), classes), index=_matrix(table, 0).columns)
    frames = []
    for step, part in table.groupby("step", sort=True):
        matrix = _matrix(table, step)
        grouped = part.groupby("image")
        frame = pd.DataFrame({
            "step": step, "sparsity": grouped["sparsity"].mean(),
            "image": matrix.columns, "label": grouped["label"].first(),
            "correct": grouped["correct"].mean(),
            "flip": grouped["flip"].mean(), "seeds": grouped["seed"].nunique(),
            "modal": modal_label(matrix.to_numpy(), classes), "dense_modal": dense_modal.loc[matrix.columns].to_numpy(),
        }).reset_index(drop=True)
        frame["pie"] = (frame["modal"] != frame["dense_modal"]).astype(float) if seeds >= MIN_POPULATION else np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def welch_t(a, b) -> tuple[float, float, float]:
    """Welch's two-sample t test of mean(a) - mean(b), unequal variances: (t, degrees of freedom
    (Welch-Satterthwaite), two-sided p). NaN where a sample has fewer than two values or both have no spread."""
    from scipy.special import stdtr  # Student's t distribution function, without importing scipy.stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return float("nan"), float("nan"), float("nan")
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(t), float(df), float(2 * stdtr(df, -abs(t)))


def class_changes(predictions: pd.DataFrame, correction: str = "holm", alpha: float = 0.05,
                  class_names=None) -> pd.DataFrame:
    """One row per (pruned step, class); see the module docstring. ``correction``: ``holm`` (family-wise error
    over the step's classes) or ``bh`` (false discovery rate), as :func:`lib.stats.adjust`."""
    from lib.stats import adjust

    _check_predictions(predictions)
    table = predictions.assign(correct=(predictions["prediction"] == predictions["label"]).astype(float))
    by_class = table.groupby(["step", "seed", "label"])["correct"].mean().rename("class_acc").reset_index()
    overall = table.groupby(["step", "seed"])["correct"].mean().rename("overall_acc").reset_index()
    by_class = by_class.merge(overall, on=["step", "seed"])
    by_class["relative"] = by_class["class_acc"] - by_class["overall_acc"]
    sparsity = table.groupby("step")["sparsity"].mean().to_dict() if "sparsity" in table else {}
    counts = table[table["step"] == 0].groupby("label")["image"].nunique()
    rows = []
    dense = by_class[by_class["step"] == 0].set_index(["label", "seed"])
    for step in sorted(s for s in by_class["step"].unique() if s != 0):
        pruned = by_class[by_class["step"] == step].set_index(["label", "seed"])
        part = []
        for label in sorted(counts.index):
            d, p = dense.loc[label], pruned.loc[label]
            t, df, p_value = welch_t(p["relative"], d["relative"])
            part.append({"step": step, "sparsity": sparsity.get(step, float("nan")), "class": int(label), "images": int(counts[label]), "seeds": len(p),
                         "acc_dense": float(d["class_acc"].mean()), "acc_pruned": float(p["class_acc"].mean()),
                         "change": float(p["class_acc"].mean() - d["class_acc"].mean()),
                         "relative_change": float(p["relative"].mean() - d["relative"].mean()),
                         "t": t, "df": df, "p_value": p_value})
        adjusted = adjust([r["p_value"] for r in part], correction)
        for record, p in zip(part, adjusted):
            record.update(p_adjusted=float(p), correction=correction,
                          significant=bool(p <= alpha) if not np.isnan(p) else False)
        rows += part
    frame = pd.DataFrame(rows)
    if class_names is not None and not frame.empty:
        frame.insert(2, "name", [class_names[c] for c in frame["class"]])
    return frame


def checkpoint_rows(images: pd.DataFrame, classes: pd.DataFrame, records: dict | None = None) -> list[dict]:
    """The stage's rows of ``metrics.json``, one per step: ``acc`` (mean over seeds and images),
    ``flip_share`` (share of (seed, image) pairs that flipped), ``pie_share`` (share of images that are PIEs;
    NaN with one seed), ``classes_hurt`` / ``classes_helped`` (classes whose relative change is significant
    after the correction, negative / positive; NaN where Welch's test is undefined), ``seeds``; ``records``:
    step -> the checkpoint's ``sparsity`` and ``test_acc`` (means over seeds) where known."""
    rows = []
    for step, part in images.groupby("step", sort=True):
        row = {"step": int(step), "sparsity": float(part["sparsity"].mean()), **(records or {}).get(step, {}),
               "acc": float(part["correct"].mean()), "flip_share": float(part["flip"].mean()),
               "pie_share": float(part["pie"].mean()) if part["pie"].notna().all() else float("nan"),
               "seeds": int(part["seeds"].max())}
        mine = classes[classes["step"] == step] if not classes.empty else classes
        if step == 0:
            row.update(classes_hurt=0.0, classes_helped=0.0)
        elif mine.empty or mine["p_value"].isna().all():
            row.update(classes_hurt=float("nan"), classes_helped=float("nan"))
        else:
            row.update(classes_hurt=float((mine["significant"] & (mine["relative_change"] < 0)).sum()),
                       classes_helped=float((mine["significant"] & (mine["relative_change"] > 0)).sum()))
        rows.append(row)
    return rows


def forgetting_score(images: pd.DataFrame) -> pd.Series:
    """How much each image is forgotten over the pruned checkpoints: the sum over pruned steps of ``pie`` (with a
    population) or of ``flip`` (one seed), indexed by image."""
    column = "pie" if images["pie"].notna().all() else "flip"
    return images[images["step"] != 0].groupby("image")[column].sum()


def most_forgotten(images: pd.DataFrame, count: int = 12) -> pd.DataFrame:
    """The ``count`` most forgotten images (:func:`forgetting_score` > 0, highest first; ties: forgotten at the
    lower sparsity first, then by image id), each with its label, the dense modal label, the first step at which
    it is forgotten and the modal label there."""
    column = "pie" if images["pie"].notna().all() else "flip"
    score = forgetting_score(images)
    forgotten = images[(images["step"] != 0) & (images[column] > 0)].sort_values("step")
    first = forgotten.groupby("image").first()
    table = first.assign(score=score.loc[first.index]).reset_index()
    table = table.sort_values(["score", "sparsity", "image"], ascending=[False, True, True]).head(count)
    return table[["image", "label", "dense_modal", "step", "sparsity", "modal", "flip", "score"]].rename(
        columns={"step": "first_step", "sparsity": "first_sparsity", "modal": "modal_then", "flip": "flip_then"}
    ).reset_index(drop=True)


# ----------------------------------------------------------------------------- across dimensions
def canonical_image(image) -> str:
    """An image id comparable across the stages: the embedded data's ``test_00012`` (RQ1) and ``test_12`` (RQ2) are
    both ``test_12``; other ids (file stems of real datasets) are kept as they are."""
    match = re.fullmatch(r"([A-Za-z]+)_0*(\d+)", str(image))
    return f"{match.group(1)}_{int(match.group(2))}" if match else str(image)


def join_dimensions(images: pd.DataFrame, tables: dict[str, pd.DataFrame], columns: dict[str, list[str]]) -> pd.DataFrame:
    """Forget's per-image table joined, on (step, image), with other stages' per-image tables: ``tables``
    {stage: its per-image table (``step``, ``image`` and the columns)}, ``columns`` {stage: the columns to take,
    each renamed ``<stage>:<column>``}. Each stage is joined on its own (a stage's columns are NaN on the images
    it does not score); the rows no stage scores are dropped. A table with several rows per (step, image) (its
    seeds) is averaged over them."""
    out = images.assign(key=images["image"].map(canonical_image))
    for stage, table in tables.items():
        wanted = [c for c in columns.get(stage, []) if c in table.columns]
        if not wanted:
            continue
        part = table.assign(key=table["image"].map(canonical_image)).groupby(["step", "key"])[wanted].mean()
        part = part.rename(columns={c: f"{stage}:{c}" for c in wanted}).reset_index()
        out = out.merge(part, on=["step", "key"], how="left")
    joined = [c for c in out.columns if ":" in str(c)]
    return out[out[joined].notna().any(axis=1)].drop(columns="key").reset_index(drop=True) if joined else out.iloc[:0]


def compare_forgotten(joined: pd.DataFrame, columns: list[str], by: str = "flip") -> pd.DataFrame:
    """Per pruned step and joined column: the column's mean over the images that are forgotten (``by`` > 0) and
    over those that are not, their difference, and how many images each side holds (the images the column's
    stage scores)."""
    rows = []
    for step, all_images in joined[joined["step"] != 0].groupby("step", sort=True):
        for column in columns:
            part = all_images[all_images[column].notna()]
            forgotten = part[by] > 0
            values = part[column].astype(float)
            rows.append({"step": int(step), "sparsity": float(part["sparsity"].mean()), "dimension": column,
                         "forgotten": float(values[forgotten].mean()) if forgotten.any() else float("nan"),
                         "kept": float(values[~forgotten].mean()) if (~forgotten).any() else float("nan"),
                         "n_forgotten": int(forgotten.sum()), "n_kept": int((~forgotten).sum())})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["difference"] = frame["forgotten"] - frame["kept"]
    return frame
