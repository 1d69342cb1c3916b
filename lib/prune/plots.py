"""The prune stage's figure: test accuracy against sparsity, one line per plan.

:func:`stage_figures` draws it from what the stage's folder keeps (``plots/accuracy.csv``, ``metrics.json``):
notebook 02 and ``lib.redraw`` both call it."""

from __future__ import annotations

import pandas as pd

from lib.plots import accuracy_axis, legend_beside, plot_against_sparsity, styled


def stage_figures(rows: list[dict] | pd.DataFrame, metrics: dict) -> dict:
    """The stage's figures by name from its checkpoint rows (``plots/accuracy.csv``: every run's, a grid's too) and
    its ``metrics.json`` (``chance``: ``{"test_acc": 1 / classes}``, absent where unknown)."""
    return {"accuracy": plot_accuracy(pd.DataFrame(rows), chance=(metrics.get("chance") or {}).get("test_acc"))}


@styled
def plot_accuracy(frame: pd.DataFrame, metric: str = "test_acc", ylabel: str = "test accuracy",
                  chance: float | None = None):
    """One panel per architecture: ``metric`` against the target sparsity (a regrowing run's measured sparsity
    is near 0 after retraining), one line per plan (its colour in every figure); dashed, in the same colour:
    before retraining (``pruned_acc``), where recorded; chance dashed (``chance``: 1 / classes; unknown, the
    axis still starts at 0 and says so); one legend beside the panels."""
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(frame["arch"]))
    fig, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 3.6), squeeze=False, layout="constrained")
    for ax, arch in zip(axes[0], archs):
        part = frame[frame["arch"] == arch]
        plot_against_sparsity(part, metric, ax=ax, label_by=("plan",), ylabel=ylabel, title=arch, legend=False,
                              x="target")
        if "pruned_acc" in part and part["pruned_acc"].notna().any():
            for line, (_, run) in zip(ax.get_lines(), part.groupby("plan", sort=True)):
                run = run.dropna(subset=["pruned_acc"]).sort_values("target")
                ax.plot(run["target"] * 100, run["pruned_acc"], ls="--", marker="x", ms=3, color=line.get_color())
            ax.plot([], [], ls="--", color="grey", label="before retraining (dashed)")
        accuracy_axis(ax, chance, label=ylabel)
    legend_beside(axes[0, -1])
    return fig
