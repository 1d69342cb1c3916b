"""Figures and tables that read only the stages' metrics files (see ``lib.results``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def plot_against_sparsity(frame: pd.DataFrame, metric: str, ax=None, label_by=("arch", "method"), title: str | None = None,
                          ylabel: str | None = None):
    """One line per (arch, method): ``metric`` against sparsity, checkpoints marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    keys = [k for k in label_by if k in frame.columns]
    groups = frame.groupby(keys) if keys else [((), frame)]
    for key, part in groups:
        part = part.sort_values("sparsity")
        label = " / ".join(map(str, key if isinstance(key, tuple) else (key,)))
        ax.plot(part["sparsity"] * 100, part[metric], marker="o", ms=3, label=label or metric)
    ax.set_xlabel("sparsity of prunable weights (%)")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def sparsity_table(frame: pd.DataFrame, metric: str, index=("arch", "method")) -> pd.DataFrame:
    """``metric`` per checkpoint, one row per (arch, method), columns = rounded sparsity (%)."""
    frame = frame.assign(sparsity_pct=(frame["sparsity"] * 100).round(1))
    keys = [k for k in index if k in frame.columns]
    return frame.pivot_table(index=keys, columns="sparsity_pct", values=metric, aggfunc="first")


def sweet_spot(per_image: pd.DataFrame, metric: str, sparsity_by_step: dict, n_boot: int = 1000, seed: int = 0,
               level: float = 0.95, higher_is_better: bool = True, alpha: float = 0.05) -> dict:
    """The sparsity where ``metric`` is best, tested against dense with the selection kept in the test.

    ``per_image``: one row per (step, image) with columns ``step``, ``image`` and ``metric``; only the
    images with a value at every step are kept (paired). Pivots them into (images, checkpoints), dense
    (step 0) first, and calls :func:`lib.stats.sweet_spot` (max-t sign-flip p-value over checkpoints,
    simultaneous gain interval and re-selecting location interval at ``level``, ``n_boot`` resamples):
    its record plus ``metric`` and ``step``. ``beats_dense`` there is for this metric alone;
    :func:`sweet_spot_table` decides over all the report's metrics at once.
    """
    from lib import stats

    table = per_image.pivot_table(index="image", columns="step", values=metric, aggfunc="mean").dropna()
    if table.empty or 0 not in table.columns:
        raise ValueError(f"per-image values of {metric!r} need the dense checkpoint (step 0) and common images")
    steps = [0] + sorted(s for s in table.columns if s != 0)
    spot = stats.sweet_spot(table[steps].to_numpy(dtype=float), [sparsity_by_step[s] for s in steps],
                            higher_is_better=higher_is_better, n_resamples=n_boot, seed=seed, level=level, alpha=alpha)
    return {"metric": metric, "step": int(steps[spot["step_index"]]), **spot}


def dimension_correlations(frame: pd.DataFrame, metrics: list[str], method: str = "spearman") -> pd.DataFrame:
    """Rank correlation between dimensions across checkpoints (one row of ``frame`` per checkpoint)."""
    present = [m for m in metrics if m in frame.columns and frame[m].notna().sum() > 2]
    return frame[present].corr(method=method)


# The dimensions of Study A's conclusion, by stage: fnmatch patterns of the metrics each stage writes.
DIMENSIONS = {
    "prune": ["test_acc"],
    "interpret": ["rma_*", "rra_*"],
    "discover": ["corloc_*"],
    "align": ["ood_acc", "shape_bias", "error_consistency*"],
    "mis": ["mis", "mis_*"],
}
KEYS = ["arch", "method", "step"]


def metric_columns(frame: pd.DataFrame, stage: str) -> list[str]:
    """The columns of ``frame`` that are ``stage``'s dimensions (numeric, not all missing)."""
    from fnmatch import fnmatch

    return [c for c in frame.columns if any(fnmatch(c, p) for p in DIMENSIONS[stage])
            and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]


def load_dimensions(root) -> tuple[pd.DataFrame, dict]:
    """One row per checkpoint (arch, method, step) with every stage's metrics; and stage -> its columns.

    Sparsity and test accuracy come from the pruning stage; a stage that has not run is left out.
    """
    from lib.results import collect

    merged, columns = None, {}
    for stage in DIMENSIONS:
        frame = collect(root, stage)
        if frame.empty:
            continue
        cols = metric_columns(frame, stage)
        keep = KEYS + (["sparsity"] if stage == "prune" else []) + cols
        part = frame[[c for c in keep if c in frame.columns]].drop_duplicates(KEYS)
        columns[stage] = cols
        merged = part if merged is None else merged.merge(part, on=KEYS, how="left")
    if merged is None or "sparsity" not in merged:
        raise FileNotFoundError(f"no pruning metrics under {root}/prune: run the pipeline first (dvc repro)")
    return merged.sort_values(KEYS).reset_index(drop=True), columns


def plot_dimensions(frame: pd.DataFrame, columns: dict, arch: str):
    """One page per architecture: a panel per dimension (stage), its metrics against sparsity, per method."""
    stages = [s for s in columns if columns[s]]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.4), squeeze=False)
    part = frame[frame["arch"] == arch].sort_values("sparsity")
    for ax, stage in zip(axes[0], stages):
        for (method,), group in part.groupby(["method"]):
            for metric in columns[stage]:
                if group[metric].notna().any():
                    ax.plot(group["sparsity"] * 100, group[metric], marker="o", ms=3, label=f"{metric} ({method})")
        ax.set_title(f"{arch}: {stage}")
        ax.set_xlabel("sparsity (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


# Where each stage keeps the values a metric averages (file, per-item column, item id column):
# the sweet spot's bootstrap resamples those items (images; units for MIS).
RESAMPLED = {
    "interpret": ("per_image.csv", {m: m for m in ("rma_*", "rra_*")}, "image"),
    "discover": ("per_image.csv", {"corloc_*": "hit_*"}, "image"),
    "align": ("per_image.csv", {"ood_acc": "correct"}, "image_id"),
    "mis": ("per_unit.csv", {"mis": "mis"}, "unit"),
}


def _resampled_columns(columns: list[str], patterns: dict) -> dict:
    """metric -> per-item column, expanding ``*`` (``corloc_lost`` -> ``hit_lost``)."""
    from fnmatch import fnmatch

    out = {}
    for metric_pattern, item_pattern in patterns.items():
        for metric in columns:
            if fnmatch(metric, metric_pattern):
                star = metric[len(metric_pattern.split("*")[0]):] if "*" in metric_pattern else ""
                out[metric] = item_pattern.replace("*", star)
    return out


def sweet_spot_table(root, frame: pd.DataFrame, columns: dict, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                     correction: str = "holm", lower_is_better: tuple = ()) -> pd.DataFrame:
    """Sweet spot of every metric with per-item values, per (arch, method) (see :func:`sweet_spot`).

    All the rows are one family: ``beats_dense``, ``p_adjusted`` and ``verdict`` come from
    :func:`lib.stats.claim` over them, ``correction`` "holm" (family-wise error rate) or "bh" (false
    discovery rate) at ``alpha``. Metrics matching a pattern of ``lower_is_better`` are tested for a decrease.
    """
    from fnmatch import fnmatch
    from pathlib import Path

    from lib import stats

    rows = []
    for stage, (file, patterns, item) in RESAMPLED.items():
        metrics = _resampled_columns(columns.get(stage, []), patterns)
        for path in sorted(Path(root, stage).glob(f"*/*/{file}")):
            arch, method = path.parent.parent.name, path.parent.name
            items = pd.read_csv(path)
            if stage == "mis":  # one row per unit and backend: resample units (of the first backend)
                items = items[(items["backend"] == items["backend"].iloc[0]) & ~items["constant"].astype(bool)]
                items = items.assign(unit=items["layer"].astype(str) + ":" + items["unit"].astype(str))
            elif stage == "align":  # OOD trials only (the model-vs-human datasets and distortions)
                items = items.assign(image_id=items["dataset"].astype(str) + "/" + items["condition"].astype(str)
                                     + "/" + items["image_id"].astype(str))
            items = items.rename(columns={item: "image"})
            part = frame[(frame["arch"] == arch) & (frame["method"] == method)]
            sparsity = dict(zip(part["step"], part["sparsity"]))
            for metric, column in metrics.items():
                if column in items.columns and items[column].notna().any():
                    values = items[["step", "image", column]].dropna().rename(columns={column: metric})
                    values[metric] = values[metric].astype(float)
                    if not (values["step"] == 0).any():
                        continue  # undefined on every image of the dense model (e.g. all-zero maps): no reference
                    higher = not any(fnmatch(metric, p) for p in lower_is_better)
                    spot = sweet_spot(values, metric, sparsity, n_boot=n_boot, seed=seed, higher_is_better=higher,
                                      alpha=alpha)
                    rows.append({"arch": arch, "method": method, "stage": stage, **spot,
                                 "resampled": "units" if stage == "mis" else "images"})
    return pd.DataFrame(stats.claim(rows, alpha, correction))


def parameter_counts(root) -> dict:
    """Parameters of each architecture's dense model, from the training stage's metrics."""
    from pathlib import Path

    from lib import io

    return {p.parent.name: io.load_json(p).get("params") for p in sorted(Path(root, "train").glob("*/metrics.json"))}
