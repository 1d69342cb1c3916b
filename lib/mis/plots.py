"""The unit-interpretability figures: MIS against sparsity, per-layer profiles, per-unit distributions,
the classifier's units against class accuracy, and example tasks.

:func:`stage_figures` draws the stage's figures from what its folder keeps (``plots/mis.csv``, ``per_unit.csv``,
``plots/mis_layers.csv``, ``plots/mis_classes.csv``, ``metrics.json``): notebook 06 and ``lib.redraw`` both call it.
The example tasks are images of the pool, which no table holds: the notebook's alone."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.data.image_pool import ImagePool
from lib.mis.activations import OUTPUT_LAYERS
from lib.mis.metrics import rank_correlation
from lib.plots import accuracy_axis, colour, legend_beside, legend_below, styled


def stage_figures(checkpoints: pd.DataFrame, units: pd.DataFrame, layers: pd.DataFrame, classes: pd.DataFrame,
                  metrics: dict) -> dict:
    """The stage's figures by name (None: nothing to draw, no figure) from its tables (``plots/mis.csv``: a row per
    checkpoint; ``per_unit.csv``, ``plots/mis_layers.csv``, ``plots/mis_classes.csv``: the rows of the controls, where
    they have a ``control``, are left out) and its ``metrics.json``: ``arch``, ``plan``, the primary backend
    ``similarity``, the ``controls``' rows and ``chance`` (``{"test_acc": 1 / classes}``, absent where unknown)."""
    def checkpoints_only(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["control"].isna()] if "control" in table else table

    primary, name = metrics["similarity"], f"{metrics['arch']}: {metrics['plan']}"
    classes = checkpoints_only(classes)
    return {"mis": plot_mis_vs_sparsity(checkpoints, pd.DataFrame(metrics.get("controls") or []),
                                        title=f"{name} ({primary} similarity)",
                                        chance=(metrics.get("chance") or {}).get("test_acc")),
            "mis_units": plot_unit_distributions(checkpoints_only(units), primary, title=name),
            "mis_layers": plot_layer_profiles(checkpoints_only(layers), primary, title=f"{name}, mean MIS per layer"),
            "mis_classes": None if classes.empty else plot_class_units(classes, primary, title=name)}


@styled
def plot_mis_vs_sparsity(checkpoints: pd.DataFrame, controls: pd.DataFrame | None = None, title: str = "",
                         chance: float | None = None):
    """Model-level MIS (5-95 percentile band), share solved and the output units' MIS against sparsity, accuracy
    on a second axis (from 0, ``chance`` dashed: 1 / classes of the pool); one legend below the axes."""
    import matplotlib.pyplot as plt

    frame = checkpoints.sort_values("sparsity")
    x = frame["sparsity"] * 100
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    ax.fill_between(x, frame["mis_p05"], frame["mis_p95"], color="C0", alpha=0.2, label="MIS 5-95% of units")
    ax.plot(x, frame["mis"], color="C0", marker="o", ms=3, label="MIS (mean over units)")
    ax.plot(x, frame["solved"], color="C1", ls="--", marker=".", label="share of tasks solved")
    for out, style, shade in zip(OUTPUT_LAYERS, (":", "-."), ("C2", "C3")):
        if f"mis_{out}" in frame:
            ax.plot(x, frame[f"mis_{out}"], color=shade, ls=style, label=f"MIS of {out} units")
    if controls is not None and not controls.empty:
        for _, c in controls.iterrows():
            ax.axhline(c["mis"], color=colour(c["control"]), lw=1.2, ls="-",  # dashed: chance
                       label=f"control {c['control']}: MIS {c['mis']:.2f}, acc {_fmt(c['pool_acc'])}")
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set_xlabel("sparsity of prunable weights (%)")
    ax.set_ylabel("machine interpretability")
    accuracy = "test_acc" if frame.get("test_acc") is not None and frame["test_acc"].notna().any() else "pool_acc"
    if frame[accuracy].notna().any():
        twin = ax.twinx()
        twin.plot(x, frame[accuracy], color="black", alpha=0.5, marker="s", ms=3, label=accuracy.replace("_", " "))
        accuracy_axis(twin, chance, label=accuracy.replace("_", " ") + " (right axis)")
    trend = rank_correlation(frame["sparsity"], frame["mis"])
    ax.set_title(f"{title}\nSpearman rho(MIS, sparsity) = {trend['rho']:.2f} (p = {trend['p']:.2g}, n = {trend['n']})")
    ax.grid(alpha=0.3)
    legend_below(fig, ncol=2)
    return fig


@styled
def plot_layer_profiles(layers: pd.DataFrame, backend: str | None = None, title: str = ""):
    """Mean MIS of every layer, one line per checkpoint coloured by sparsity (darker: denser), all in the legend."""
    import matplotlib.pyplot as plt

    frame = layers[layers["backend"] == (backend or layers["backend"].iloc[0])]
    frame = frame[frame["step"].notna()] if "step" in frame else frame
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    cmap = plt.get_cmap("viridis")
    top = max(frame["sparsity"].max(), 1e-9)
    for _, part in frame.groupby("step"):
        part = part.sort_values("depth")
        sparsity = part["sparsity"].iloc[0]
        ax.plot(part["depth"], part["mis"], marker="o", ms=3, color=cmap(0.9 * sparsity / top), label=f"{sparsity:.0%}")
    names = frame.drop_duplicates("depth").sort_values("depth")
    ax.set_xticks(names["depth"], names["layer"], rotation=45, ha="right")
    ax.set_ylabel("mean MIS of the layer's units")
    ax.axhline(0.5, color="grey", lw=0.6)
    legend_beside(ax, title="sparsity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


@styled
def plot_unit_distributions(units: pd.DataFrame, backend: str | None = None, title: str = ""):
    """Box plot of the per-unit MIS (hidden layers) of every checkpoint."""
    import matplotlib.pyplot as plt

    frame = units[(units["backend"] == (backend or units["backend"].iloc[0])) & ~units["layer"].isin(OUTPUT_LAYERS)]
    frame = frame[frame["mis"].notna()]
    groups = [(s, part["mis"].to_numpy()) for s, part in frame.groupby("sparsity")]
    fig, ax = plt.subplots(figsize=(6.2, 3.2))
    ax.boxplot([g for _, g in groups], tick_labels=[f"{s:.0%}" for s, _ in groups], showfliers=False)
    ax.set_xlabel("sparsity")
    ax.set_ylabel("per-unit MIS")
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


@styled
def plot_class_units(classes: pd.DataFrame, backend: str | None = None, title: str = ""):
    """Per-class accuracy against the MIS of that class's logit and softmax unit, densest and sparsest checkpoint."""
    import matplotlib.pyplot as plt

    frame = classes[classes["backend"] == (backend or classes["backend"].iloc[0])]
    steps = sorted(frame["step"].dropna().unique())
    steps = steps[:1] + steps[-1:] if len(steps) > 1 else steps
    layers = [out for out in OUTPUT_LAYERS if f"mis_{out}" in frame]
    fig, axes = plt.subplots(1, len(layers), figsize=(3.8 * len(layers), 3.4), squeeze=False, layout="constrained")
    for ax, out in zip(axes[0], layers):
        for step in steps:
            part = frame[frame["step"] == step]
            ax.scatter(part["accuracy"], part[f"mis_{out}"], s=14, alpha=0.7,
                       label=f"step {int(step)} ({part['sparsity'].iloc[0]:.0%} sparse)")
        ax.set_xlabel("class accuracy on the pool")
        ax.set_xlim(-0.03, 1.03)  # from 0: chance (1 / classes) is inside
        ax.set_ylabel(f"MIS of the class's {out} unit")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    legend_below(fig, axes=axes[0][:1], ncol=len(steps))
    return fig


def plot_unit_tasks(pool: ImagePool, examples: list):
    """One task of the dense model's most and least interpretable hidden units: explanations and queries."""
    import matplotlib.pyplot as plt

    max_columns = max(len(ex["positive"]) for ex in examples)
    fig, axes = plt.subplots(2 * len(examples), max_columns + 1, figsize=(1.1 * (max_columns + 1), 2.3 * len(examples)),
                             squeeze=False)
    for i, ex in enumerate(examples):
        for side, (explanations, query) in enumerate(((ex["positive"], ex["query_max"]), (ex["negative"], ex["query_min"]))):
            row = axes[2 * i + side]
            for j, ax in enumerate(row):
                ax.axis("off")
                index = query if j == max_columns else (explanations[j] if j < len(explanations) else None)
                if index is not None:
                    ax.imshow(pool.images[index])
            row[0].set_title(f"{ex['label']}: {'most' if side == 0 else 'least'} activating", fontsize=7, loc="left")
            row[-1].set_title("max query" if side == 0 else "min query", fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- helpers


def _fmt(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
