"""Figures and tables that read only the stages' metrics files (see ``lib.results``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lib.pipeline import ANALYSES, MIS_OUTPUT_LAYERS, STAGES
from lib.plots import accuracy_axis, chance_of, colour, legend_below, styled


def sparsity_table(frame: pd.DataFrame, metric: str, index=("arch", "plan")) -> pd.DataFrame:
    """``metric`` per checkpoint, one row per (arch, plan), columns = rounded sparsity (%)."""
    frame = frame.assign(sparsity_pct=(frame["sparsity"] * 100).round(1))
    keys = [k for k in index if k in frame.columns]
    return frame.pivot_table(index=keys, columns="sparsity_pct", values=metric, aggfunc="first")


def sweet_spot(per_image: pd.DataFrame, metric: str, sparsity_by_step: dict, n_resamples: int = 2000, seed: int = 0,
               level: float = 0.95, higher_is_better: bool = True, alpha: float = 0.05) -> dict:
    """The sparsity where ``metric`` is best, tested against dense with the selection kept in the test.

    ``per_image``: one row per (step, image) with columns ``step``, ``image`` and ``metric``; only the
    images with a value at every step are kept (paired). Pivots them into (images, checkpoints), dense
    (step 0) first, and calls :func:`lib.stats.sweet_spot`: its record plus ``metric`` and ``step``.
    ``beats_dense`` there is for this metric alone; :func:`sweet_spot_table` decides over all the report's
    metrics at once.
    """
    from lib import stats

    table = per_image.pivot_table(index="image", columns="step", values=metric, aggfunc="mean").dropna()
    if table.empty or 0 not in table.columns:
        raise ValueError(f"per-image values of {metric!r} need the dense checkpoint (step 0) and common images")
    steps = [0] + sorted(s for s in table.columns if s != 0)
    spot = stats.sweet_spot(table[steps].to_numpy(dtype=float), [sparsity_by_step[s] for s in steps],
                            higher_is_better=higher_is_better, n_resamples=n_resamples, seed=seed, level=level,
                            alpha=alpha)
    return {"metric": metric, "step": int(steps[spot["step_index"]]), **spot}


KEYS = ["arch", "plan", "step"]


def metric_columns(frame: pd.DataFrame, stage: str) -> list[str]:
    """The columns of ``frame`` that are metrics ``stage`` declares (numeric, not all missing)."""
    declared = STAGES[stage]
    return [c for c in frame.columns if declared.metric(c) is not None
            and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]


def load_dimensions(root) -> tuple[pd.DataFrame, dict]:
    """One row per checkpoint (arch, plan, step) with every declared metric; and stage -> its columns.

    The dimensions are the metrics the stages declare (``lib.pipeline``); sparsity and test accuracy come
    from the prune stage; a stage that has not run is left out.
    """
    from lib.results import collect

    merged, columns = None, {}
    for stage in ("prune", *ANALYSES):
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


def panels(columns: dict) -> list[tuple[str, str, list[str]]]:
    """(stage, declared metric, its columns) for every declared metric present: one panel each."""
    out = []
    for stage, cols in columns.items():
        for metric in STAGES[stage].metrics:
            present = [c for c in cols if metric.matches(c)]
            if present:
                out.append((stage, metric.name, present))
    return out


def _variant(metric: str, column: str) -> str:
    """What ``*`` stands for in ``column`` (``rma_gradcam`` of ``rma_*``: ``gradcam``); the column otherwise."""
    if "*" not in metric:
        return column
    prefix, suffix = metric.split("*", 1)
    return column[len(prefix):len(column) - len(suffix)]


# Metrics that are accuracies: their panels start at 0 and show chance where the caller knows it.
ACCURACY = ("test_acc", "ood_acc", "ood_acc_all_images")


def chance_levels(root, arch: str) -> dict:
    """Chance levels of the accuracy panels, as the run records them: test accuracy's is 1 / the classes of the
    architecture's trained model (``<root>/train/<arch>/model.pt``); an analysis stage records its own in its
    ``metrics.json`` as ``chance: {metric: level}`` (RQ3's OOD accuracy: 1 / the benchmark's categories). A
    level that no file records is not given (the panel says so)."""
    import json
    from pathlib import Path

    chance = chance_of(f"{root}/train/{arch}/model.pt")
    levels = {} if chance is None else {"test_acc": chance}
    for stage in ANALYSES:
        for path in sorted(Path(root, stage, arch).glob("*/metrics.json")):
            recorded = json.loads(path.read_text()).get("chance") or {}
            levels.update({metric: float(level) for metric, level in recorded.items()})
    return levels


@styled
def plot_dimensions(frame: pd.DataFrame, columns: dict, arch: str, ncols: int = 3, chance: dict | None = None):
    """Small multiples for one architecture: a panel per declared metric against sparsity.

    A metric with variants (``rma_*``: one per attribution) has a line per variant in the variant's
    colour (:func:`lib.plots.colour`, the same as in the stages' own figures); a metric without variants is
    drawn in its plan's colour; one line style per plan. One legend for the figure,
    below the panels; the direction of each metric in its title. Accuracy panels (:data:`ACCURACY`) start at
    0 with chance dashed (``chance``: metric -> chance level; where it is not given the axis label says so).
    """
    import itertools

    layout = panels(columns)
    part = frame[frame["arch"] == arch].sort_values("sparsity")
    plans = sorted(part["plan"].unique())
    styles = dict(zip(plans, itertools.cycle(["-", "--", ":", "-."])))
    ncols = max(1, min(ncols, len(layout)))
    nrows = -(-len(layout) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.0 * nrows), squeeze=False, layout="constrained")
    for ax, (stage, metric, cols) in zip(axes.flat, layout):
        for plan, group in part.groupby("plan"):
            for column in cols:
                if group[column].notna().any():
                    name = _variant(metric, column) if "*" in metric else plan
                    ax.plot(group["sparsity"] * 100, group[column], marker="o", ms=3, color=colour(name),
                            ls=styles[plan], label=name if "*" in metric else f"plan: {plan}")
        better = "higher" if STAGES[stage].metric(cols[0]).higher_is_better else "lower"
        ax.set_title(f"{stage}: {metric}\n({better} is better)")
        ax.set_xlabel("sparsity (%)")
        ax.grid(alpha=0.3)
        if metric in ACCURACY:
            accuracy_axis(ax, (chance or {}).get(metric), label="accuracy")
    for ax in list(axes.flat)[len(layout):]:
        ax.axis("off")
    fig.suptitle(arch)
    extra = [(plt.Line2D([], [], color="0.3", ls=styles[m]), f"plan: {m}") for m in plans] if len(plans) > 1 else []
    legend_below(fig, ncol=5, extra=extra)
    return fig


def item_table(stage: str, path) -> pd.DataFrame:
    """A stage's per-item table with one ``item`` column naming each resampled item (the declared ``item_id``).

    The contract is that column and the declared per-item columns. MIS's table holds more where the stage
    has it, and then it is used as the stage's own ``mis`` uses it: the units of the first similarity
    ``backend`` (the ``mis`` column's), hidden units only (not the ``logits`` / ``softmax`` layers, which the
    stage reports apart), no ``control`` model's units, ``constant`` units left out, a unit named by its
    ``layer`` too (unit numbers repeat across layers). A table without those columns is read as the contract
    alone.
    """
    declared = STAGES[stage]
    items = pd.read_csv(path)
    if stage == "mis":
        if "backend" in items:
            items = items[items["backend"] == items["backend"].iloc[0]]
        if "control" in items:
            items = items[items["control"].isna()]
        if "constant" in items:
            items = items[~items["constant"].astype(bool)]
        if "layer" in items:
            items = items[~items["layer"].isin(MIS_OUTPUT_LAYERS)]
            items = items.assign(unit=items["layer"].astype(str) + ":" + items["unit"].astype(str))
    return items.rename(columns={declared.item_id: "item"})


def sweet_spot_table(root, frame: pd.DataFrame, columns: dict, n_resamples: int = 2000, seed: int = 0,
                     alpha: float = 0.05, correction: str = "holm") -> pd.DataFrame:
    """The sweet spot of every declared metric with per-item values, per (arch, plan), tested.

    Each metric's test is selection-aware (``lib.stats.sweet_spot``); across every test of the report the
    error rate is controlled by ``correction`` (Holm: family-wise; BH: false discovery rate) at ``alpha``.
    Metrics without per-item values are listed with the reason they are not tested.
    """
    from pathlib import Path

    from lib import stats

    rows = []
    for stage in ANALYSES:
        declared = STAGES[stage]
        for path in sorted(Path(root, stage).glob(f"*/*/{declared.items}")):
            arch, plan = path.parent.parent.name, path.parent.name
            part = frame[(frame["arch"] == arch) & (frame["plan"] == plan)]
            if part.empty:
                continue
            sparsity = dict(zip(part["step"], part["sparsity"]))
            items = item_table(stage, path)
            for column in columns.get(stage, []):
                metric = declared.metric(column)
                base = {"arch": arch, "plan": plan, "stage": stage, "metric": column,
                        "higher_is_better": metric.higher_is_better}
                item = metric.item_column(column)
                if not metric.tested:
                    rows.append({**base, "verdict": "not tested: a secondary score (shown, outside the family)"})
                    continue
                if item is None or item not in items.columns:
                    rows.append({**base, "verdict": f"not tested: {metric.why_untested or 'no per-item values'}"})
                    continue
                table = items.pivot_table(index="item", columns="step", values=item, aggfunc="mean").dropna()
                if 0 not in table.columns or table.empty:
                    rows.append({**base, "verdict": "not tested: undefined on the dense model"})
                    continue
                steps = [s for s in sorted(table.columns) if s in sparsity]
                table = table[[0] + [s for s in steps if s != 0]].astype(float)
                spot = stats.sweet_spot(table.to_numpy(), [sparsity[s] for s in table.columns],
                                        higher_is_better=metric.higher_is_better, n_resamples=n_resamples,
                                        seed=seed, alpha=alpha)
                rows.append({**base, "step": int(table.columns[spot["step_index"]]), **spot,
                             "resampled": declared.item_id})
    stats.claim([r for r in rows if "p_value" in r], alpha=alpha, method=correction)  # one family: the report
    return pd.DataFrame(rows)


def dimension_correlations(frame: pd.DataFrame, metrics: list[str], method: str = "spearman") -> pd.DataFrame:
    """Rank correlation between dimensions across checkpoints (one row of ``frame`` per checkpoint)."""
    present = [m for m in metrics if m in frame.columns and frame[m].notna().sum() > 2]
    return frame[present].corr(method=method)


def parameter_counts(root) -> dict:
    """Parameters of each architecture's dense model, from the train stage's metrics."""
    from pathlib import Path

    from lib import storage

    return {p.parent.name: storage.load_json(p).get("params") for p in sorted(Path(root, "train").glob("*/metrics.json"))}
