"""MIS metrics of a model and their analyses: a model's level (mean and percentiles over its hidden units),
the per-class table of its output units, rank correlations with sparsity or class accuracy."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from lib.data.image_pool import ImagePool
from lib.mis.activations import OUTPUT_LAYERS
from lib.mis.methods import UnitScores


def metric_name(metric: str, backend: str, primary: str) -> str:
    """Row column of a metric: plain for the primary backend (``mis``), suffixed for others (``mis_pixel``)."""
    return metric if backend == primary else f"{metric}_{backend}"


def model_level(scores: dict[str, UnitScores]) -> dict:
    """MIS of a model: mean and 5/95 percentiles over its hidden units, share solved, and the output layers' means."""
    hidden = [s for name, s in scores.items() if name not in OUTPUT_LAYERS]
    mis = torch.cat([s.mis for s in hidden]).numpy() if hidden else np.zeros(0)
    solved = torch.cat([s.solved for s in hidden]).numpy() if hidden else np.zeros(0)
    valid = mis[np.isfinite(mis)]
    return {"mis": nanmean(mis), "mis_p05": _percentile(valid, 5), "mis_p95": _percentile(valid, 95),
            "solved": nanmean(solved), **{f"mis_{out}": nanmean(scores[out].mis) for out in OUTPUT_LAYERS if out in scores},
            "units": len(mis), "constant_units": int(len(mis) - len(valid))}


def rank_correlation(x, y) -> dict:
    """Spearman's rho of ``y`` against ``x`` with its two-sided p-value (pairs with a missing value dropped)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return {"rho": float("nan"), "p": float("nan"), "n": n}
    result = spearmanr(x[keep], y[keep])
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": n}


def trend_table(checkpoints: pd.DataFrame, x: str = "sparsity") -> pd.DataFrame:
    """Rank correlation of every MIS column of the checkpoint table with ``x`` (one row per metric)."""
    metrics = [c for c in checkpoints.columns if c.startswith(("mis", "solved")) and "_p0" not in c and "_p9" not in c]
    return pd.DataFrame([{"metric": m, **rank_correlation(checkpoints[x], checkpoints[m])} for m in metrics])


def class_table_correlations(classes: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and backend: rank correlation across classes of the logit/softmax unit's MIS with class accuracy."""
    if classes.empty:
        return pd.DataFrame()
    keys = [k for k in ("step", "sparsity", "control", "backend") if k in classes.columns]
    rows = []
    for key, part in classes.groupby(keys, dropna=False):
        for out in OUTPUT_LAYERS:
            if f"mis_{out}" in part:
                rows.append({**dict(zip(keys, key)), "layer": out,
                             **rank_correlation(part["accuracy"], part[f"mis_{out}"])})
    return pd.DataFrame(rows)


def pool_accuracy(activations: dict, pool: ImagePool) -> float:
    if pool.labels is None or "logits" not in activations and "softmax" not in activations:
        return float("nan")
    outputs = activations.get("logits", activations.get("softmax"))
    return float((outputs.argmax(0).numpy() == pool.labels).mean())


def class_table(scores: dict, activations: dict, pool: ImagePool, keys: dict) -> pd.DataFrame:
    """One row per class present in the pool: its accuracy and the MIS of its logit/softmax units."""
    outputs = [out for out in OUTPUT_LAYERS if out in scores]
    if pool.labels is None or not outputs:
        return pd.DataFrame()
    predicted = activations[outputs[0]].argmax(0).numpy()
    n_classes = len(scores[outputs[0]].mis)
    labels = pool.labels
    if labels.max() >= n_classes:
        warnings.warn(f"pool labels go up to {labels.max()} but the model has {n_classes} outputs: no per-class table")
        return pd.DataFrame()
    count = np.bincount(labels, minlength=n_classes)
    correct = np.bincount(labels, weights=(predicted == labels), minlength=n_classes)
    present = np.flatnonzero(count)
    table = {**keys, "class": present, "images": count[present], "accuracy": correct[present] / count[present]}
    table.update({f"mis_{out}": scores[out].mis.numpy()[present] for out in outputs})
    table.update({f"solved_{out}": scores[out].solved.numpy()[present] for out in outputs})
    return pd.DataFrame(table)


def nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")
