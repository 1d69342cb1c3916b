"""RQ3 figures in model-vs-human's style: humans in the benchmark's red (their range shaded), chance dashed;
one legend per figure, outside the panels (``lib.plots``).

:func:`stage_figures` draws the stage's figures from what its folder keeps (``plots/alignment.csv``,
``per_image.csv``, ``metrics.json``): notebook 05 and ``lib.redraw`` both call it. The stimuli are images, which no
table holds: the notebook's alone."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.align.distortions import DISTORTIONS, check_conditions
from lib.plots import accuracy_axis, colour, legend_beside, legend_below, plot_against_sparsity, styled

HUMAN_RED = colour("humans")  # modelvshuman.plotting.colors.red


def _style(ax):
    ax.spines["right"].set_visible(False)
    ax.spines["top"].set_visible(False)


def _human_band(ax, mean, low, high, label="humans (range over observers)"):
    if mean is None:
        return
    ax.axhspan(low, high, color=HUMAN_RED, alpha=0.15, lw=0)
    ax.axhline(mean, color=HUMAN_RED, lw=1.5, ls="--", label=label)


def _grid(n: int, width: float = 3.2, height: float = 2.6):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def stage_figures(frame: pd.DataFrame, trials: pd.DataFrame, metrics: dict) -> dict:
    """The stage's figures by name (None: nothing to draw, no figure) from its checkpoint rows
    (``plots/alignment.csv``), its trials (``per_image.csv``) and its ``metrics.json``: ``arch``, ``plan``,
    ``datasets``, the observers' summary ``humans``, ``chance`` (``ood_acc``: 1 / the categories) and
    ``distortions`` (the parametric distortions' levels, :func:`distortion_levels`; none: no curves)."""
    datasets, humans = metrics["datasets"], metrics.get("humans") or {}
    chance, title = (metrics.get("chance") or {}).get("ood_acc"), f"{metrics['arch']}: {metrics['plan']}"
    return {"accuracy": plot_metric_per_dataset(frame, "acc", datasets, humans, "accuracy", ylabel="accuracy",
                                                chance=chance, title=title),
            "shape_bias": plot_shape_bias(frame, humans, title=title),
            "error_consistency": plot_error_consistency(frame, datasets, humans),
            "distortions": plot_distortion_curves(trials, metrics.get("distortions") or {}, chance=chance)}


@styled
def plot_metric_per_dataset(frame: pd.DataFrame, prefix: str, datasets, humans: dict | None = None,
                            human_key: str | None = None, ylabel: str = "", chance: float | None = None,
                            title: str | None = None):
    """One panel per dataset: ``<prefix>/<dataset>`` against sparsity, the human range where known, chance
    dashed (accuracy, ``prefix`` "acc": the axis from 0 with chance in it; kappa: chance agreement, 0);
    one legend below the panels."""
    datasets = [d for d in datasets if f"{prefix}/{d}" in frame.columns]
    fig, axes = _grid(len(datasets))
    for ax, dataset in zip(axes, datasets):
        plot_against_sparsity(frame, f"{prefix}/{dataset}", ax=ax, title=dataset, ylabel=ylabel, legend=False)
        summary = (humans or {}).get(dataset, {})
        if human_key and human_key in summary:
            _human_band(ax, summary[human_key], summary[f"{human_key}_min"], summary[f"{human_key}_max"])
        if prefix == "acc":
            accuracy_axis(ax, chance)
        elif chance is not None:
            ax.axhline(chance, color=colour("chance"), ls="--", lw=1, label=f"chance agreement ({chance:g})")
        _style(ax)
    if title:
        fig.suptitle(title)
    legend_below(fig, ncol=3)
    return fig


def plot_error_consistency(frame: pd.DataFrame, datasets, humans: dict | None = None):
    """Error consistency with the human observers (mean over them), the observers' own range shaded.

    Without human trials (the embedded default) it shows the consistency with the dense model instead.
    """
    if any(c.startswith("ec/") for c in frame.columns):
        return plot_metric_per_dataset(frame, "ec", datasets, humans, "error_consistency",
                                       ylabel="error consistency (kappa)", chance=0.0,
                                       title="error consistency with human observers")
    return plot_metric_per_dataset(frame, "ec_dense", datasets, ylabel="error consistency (kappa)", chance=0.0,
                                   title="no human observers for these images: error consistency with the dense model")


@styled
def plot_shape_bias(frame: pd.DataFrame, humans: dict | None = None, title: str | None = None):
    """Shape bias on cue-conflict against sparsity (0.5: no preference), with the observers' range; None
    (no figure) when the run has no cue-conflict dataset."""
    if "shape_bias" not in frame:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4))
    plot_against_sparsity(frame, "shape_bias", ax=ax, ylabel="shape bias (cue-conflict)", title=title, legend=False)
    summary = (humans or {}).get("cue-conflict", {})
    if "shape_bias" in summary:
        _human_band(ax, summary["shape_bias"], summary["shape_bias_min"], summary["shape_bias_max"])
    ax.axhline(0.5, color=colour("chance"), ls=":", lw=1, label="no preference (0.5)")
    ax.set_ylim(0, 1.02)
    _style(ax)
    legend_beside(ax)
    return fig


@styled
def plot_distortion_curves(trials: pd.DataFrame, levels: dict, humans: pd.DataFrame | None = None,
                           chance: float | None = None):
    """Accuracy against the distortion level, one line per checkpoint (darker = sparser), humans in red,
    chance dashed; None (no figure) when the run has no parametric distortions."""
    if not levels:
        return None
    fig, axes = _grid(len(levels))
    steps = sorted(trials["step"].unique())
    colours = plt.cm.viridis_r(np.linspace(0.1, 0.95, len(steps)))
    for ax, (name, conditions) in zip(axes, levels.items()):
        part = trials[trials["dataset"] == name]
        correct = (part["object_response"] == part["category"])
        table = correct.groupby([part["step"], part["condition"]]).mean().unstack("condition")
        for colour, step in zip(colours, steps):
            sparsity = part.loc[part["step"] == step, "sparsity"].iloc[0]
            ax.plot(conditions, table.loc[step, conditions], marker="o", ms=3, lw=1, color=colour,
                    label=f"{100 * sparsity:.0f}%")
        if humans is not None and name in set(humans["dataset"]):
            h = humans[humans["dataset"] == name]
            h_acc = (h["object_response"] == h["category"]).groupby(h["condition"]).mean()
            ax.plot(conditions, h_acc.reindex(conditions), marker="D", color=HUMAN_RED, lw=1.5, label="humans")
        ax.set_ylim(0, 1.02)
        accuracy_axis(ax, chance)
        ax.set_title(name)
        ax.set_xlabel(DISTORTIONS[name].xlabel if name in DISTORTIONS else "condition")
        ax.set_ylabel("accuracy" if chance is not None else "accuracy (from 0; chance not given)")
        _style(ax)
    legend_below(fig, ncol=min(len(steps) + 2, 8), title="sparsity of the checkpoint")
    return fig


def plot_examples(evaluation):
    """The first image of every condition: one column per dataset, its conditions downwards."""
    by_dataset = {}
    for condition in evaluation.conditions:
        by_dataset.setdefault(condition.dataset, []).append(condition)
    rows = max(len(c) for c in by_dataset.values())
    fig, axes = plt.subplots(rows, len(by_dataset), figsize=(1.15 * len(by_dataset), 1.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for col, (dataset, conditions) in enumerate(by_dataset.items()):
        for row, condition in enumerate(conditions):
            axes[row, col].imshow(condition.images[0])
            axes[row, col].set_title(f"{dataset}\n{condition.condition}" if row == 0 else condition.condition,
                                     fontsize=6)
    fig.tight_layout()
    return fig


def distortion_levels(distortions: dict) -> dict:
    """The selected conditions of every distortion in the benchmark's order (for plotting curves)."""
    check_conditions(distortions)
    return {name: [c for c in DISTORTIONS[name].conditions if c in {str(v) for v in conditions}]
            for name, conditions in distortions.items()}
