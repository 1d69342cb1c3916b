"""RQ1 figures: scores against sparsity with test accuracy on a second axis (Study A's figure), and map galleries.

:func:`stage_figures` draws the stage's figures from what its folder keeps (``plots/scores.csv``, ``metrics.json``):
notebook 03 and ``lib.redraw`` both call it. The gallery is drawn from relevance maps, which no table holds: the
notebook's alone."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.plots import accuracy_axis, colour, legend_below, styled

LABELS = {"rma": "relevance mass accuracy", "rra": "relevance rank accuracy", "pointing": "pointing game",
          "gini": "Gini sparseness", "deletion": "deletion AUC (lower: faithful)",
          "insertion": "insertion AUC (higher: faithful)"}


@styled
def plot_scores(rows: list[dict] | pd.DataFrame, metrics, attributions, baseline: dict | None = None, title: str = "",
                chance: float | None = None):
    """One panel per metric: a line per attribution (its colour in every figure) against sparsity, the
    uniform map's score dotted, and (where the checkpoints have one) test accuracy on a second axis from 0 with
    ``chance`` dashed; one legend below the panels."""
    frame = pd.DataFrame(rows).sort_values("sparsity")
    wanted, metrics = metrics, [m for m in metrics if any(f"{m}_{x}" in frame for x in attributions)]
    if not metrics:  # e.g. metrics=["rma", "rra"] and this figure's deletion/insertion: say so, do not fail
        fig, ax = plt.subplots(figsize=(4.4, 1.2), layout="constrained")
        ax.axis("off")
        ax.text(0.5, 0.5, f"{', '.join(wanted)}: not computed (the stage's metrics parameter left them out)",
                ha="center", va="center", wrap=True)
        return fig
    cols = min(len(metrics), 2)  # two panels a row: legible at the README's width
    nrows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, 3.3 * nrows), squeeze=False, layout="constrained")
    sparsity = frame["sparsity"] * 100
    has_acc = "test_acc" in frame and frame["test_acc"].notna().any()
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics):
        for attribution in attributions:
            if f"{metric}_{attribution}" in frame:
                ax.plot(sparsity, frame[f"{metric}_{attribution}"], marker="o", ms=3, color=colour(attribution), label=attribution)
        if baseline and f"uniform_{metric}" in baseline:
            ax.axhline(baseline[f"uniform_{metric}"], color=colour("uniform map"), ls=":", lw=1, label="uniform map")
        ax.set_xlabel("sparsity of prunable weights (%)")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
        if has_acc:
            twin = ax.twinx()
            twin.plot(sparsity, frame["test_acc"], color="grey", marker="s", ms=3, lw=1.2, label="test accuracy")
            accuracy_axis(twin, chance, label="test accuracy")
            twin.yaxis.label.set_color("grey")
            twin.tick_params(axis="y", colors="grey")
    if title:
        fig.suptitle(title)
    legend_below(fig, ncol=4)
    return fig


PANELS = {"rma_rra": ["rma", "rra"], "scores": ["pointing", "gini", "deletion", "insertion"]}  # figure -> metrics


def stage_figures(rows: list[dict] | pd.DataFrame, metrics: dict) -> dict:
    """The stage's figures by name (``PANELS``), from its checkpoint rows (``plots/scores.csv``) and its
    ``metrics.json`` (``arch``, ``plan``, ``attributions``, the uniform map's ``uniform_<metric>`` and ``chance``:
    ``{"test_acc": 1 / classes}``, absent where unknown)."""
    chance = (metrics.get("chance") or {}).get("test_acc")
    title = f"{metrics['arch']} / {metrics['plan']}"
    return {name: plot_scores(rows, panels, metrics["attributions"], metrics, title=title, chance=chance)
            for name, panels in PANELS.items()}


def gallery_steps(sparsity: dict, columns: int) -> list:
    """At most ``columns`` checkpoints, evenly spread over the run (first and last always in)."""
    steps = sorted(sparsity)
    if len(steps) <= columns:
        return steps
    return [steps[i] for i in np.unique(np.linspace(0, len(steps) - 1, columns).round().astype(int))]


def plot_gallery(gallery: dict, attributions, columns: int = 6):
    """The same images' relevance maps across sparsities: a row per (image, attribution), a column per checkpoint;
    the first column shows the image with its ground-truth mask outlined."""
    steps = gallery_steps(gallery["sparsity"], columns)
    images, masks = gallery["images"], gallery["masks"]
    rows = [(i, m) for i in range(len(images)) for m in attributions if m in gallery["maps"][steps[0]]]
    size = (1.5 * (len(steps) + 1), 1.5 * len(rows))
    fig, axes = plt.subplots(len(rows), len(steps) + 1, figsize=size, squeeze=False)
    for r, (i, attribution) in enumerate(rows):
        axes[r, 0].imshow(images[i])
        axes[r, 0].contour(masks[i], levels=[0.5], colors="yellow", linewidths=0.8)
        axes[r, 0].set_ylabel(attribution, fontsize=8, color=colour(attribution))  # the attribution's colour in every figure
        for c, step in enumerate(steps, start=1):
            axes[r, c].imshow(images[i].mean(-1), cmap="gray", alpha=1.0)
            heat = gallery["maps"][step][attribution][i]
            # Pixel maps are heavy-tailed: clip at the 99th percentile so more than a few pixels show.
            axes[r, c].imshow(heat, cmap="jet", alpha=0.55, vmin=0, vmax=max(float(np.percentile(heat, 99)), 1e-12))
            if r == 0:
                axes[r, c].set_title(f"{100 * gallery['sparsity'][step]:.0f}% sparse", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    return fig
