"""The object-discovery figures: CorLoc against sparsity, predicted and true boxes across sparsities.

:func:`stage_figures` draws the stage's figures from what its folder keeps (``plots/corloc.csv``, ``metrics.json``):
notebook 04 and ``lib.redraw`` both call it. The gallery is drawn on the dataset's images, which no table holds: the
notebook's (``lib.redraw`` draws it where the preset's dataset is at hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.data.boxes import BoxDataset
from lib.discover.run import BOX_COLUMNS


def stage_figures(rows, metrics: dict) -> dict:
    """The stage's figures by name from its checkpoint rows (``plots/corloc.csv``) and its ``metrics.json``
    (``arch``, ``plan``, ``dataset``, ``algorithms``, the tuned centred box's ``centred_box_corloc`` and
    ``centred_box_fraction``, and ``chance``: ``{"test_acc": 1 / classes}``, absent where unknown)."""
    label = f"centred box ({metrics['centred_box_fraction']:.0%} of each side, tuned)"
    ax = plot_corloc(rows, list(metrics["algorithms"]), baseline=metrics["centred_box_corloc"],
                     title=f"{metrics['arch']} / {metrics['plan']}: {metrics['dataset']}",
                     chance=(metrics.get("chance") or {}).get("test_acc"), baseline_label=label)
    return {"corloc": ax.figure}


def plot_corloc(rows, algorithms=("lost", "tokencut"), baseline: float | None = None, ax=None, title: str | None = None,
                baseline_label: str = "centred box", chance: float | None = None):
    """CorLoc of each algorithm (its colour in every figure) against sparsity; test accuracy (where known) on a
    second axis from 0 with ``chance`` dashed; one legend below the axes."""
    import matplotlib.pyplot as plt

    from lib.plots import STYLE, accuracy_axis, colour, legend_below

    with plt.rc_context(STYLE):
        frame = pd.DataFrame(rows).sort_values("sparsity")
        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
        x = frame["sparsity"] * 100
        for name in algorithms:
            ax.plot(x, frame[f"corloc_{name}"] * 100, marker="o", ms=3, color=colour(name), label=f"CorLoc {name}")
        if baseline is not None:
            ax.axhline(baseline * 100, color=colour("centred box"), ls="-.", lw=1.2, label=baseline_label)
        ax.set_xlabel("sparsity of prunable weights (%)")
        ax.set_ylabel("CorLoc (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        axes = [ax]
        if frame["test_acc"].notna().any():
            twin = ax.twinx()
            twin.plot(x, frame["test_acc"] * 100, color="black", ls=":", marker="s", ms=3, label="test accuracy")
            accuracy_axis(twin, chance, scale=100, label="test accuracy (%)")
            axes.append(twin)
        legend_below(ax.figure, axes=axes, ncol=2)
        if title:
            ax.set_title(title)
    return ax


def gallery_steps(rows, count: int = 3) -> list[int]:
    """``count`` checkpoints spread over the sparsity range (the dense one and the sparsest included)."""
    steps = [r["step"] for r in sorted(rows, key=lambda r: r["sparsity"])]
    picks = np.unique(np.linspace(0, len(steps) - 1, min(count, len(steps))).round().astype(int))
    return [steps[i] for i in picks]


def plot_gallery(dataset: BoxDataset, per_image: pd.DataFrame, steps, n_images: int = 6,
                 algorithms=("lost", "tokencut")):
    """Predicted (one colour per algorithm) and true (yellow) boxes on the first images, one row per checkpoint."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from lib.plots import colour

    colours = {m: colour(m) for m in algorithms}
    styles = dict(zip(algorithms, ("--", ":", "-.", "--")))
    n_images = min(n_images, len(dataset))
    fig, axes = plt.subplots(len(steps), n_images, figsize=(1.7 * n_images, 1.9 * len(steps)), squeeze=False)
    for row, step in enumerate(steps):
        part = per_image[per_image["step"] == step].reset_index(drop=True)
        for col in range(n_images):
            ax = axes[row, col]
            ax.imshow(dataset.image(col))
            ax.set_xticks([]), ax.set_yticks([])
            for x0, y0, x1, y1 in dataset.boxes[col]:
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1.2))
            for name in algorithms:
                x0, y0, x1, y1 = (part.loc[col, f"{name}_{c}"] for c in BOX_COLUMNS)
                if not np.isnan(x0):
                    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=colours[name],
                                           lw=2.0, ls=styles[name]))
        axes[row, 0].set_ylabel(f"{part.loc[0, 'sparsity'] * 100:.0f}% sparse", fontsize=9)
    handles = [Rectangle((0, 0), 1, 1, fill=False, color="yellow", label="ground truth")]
    handles += [Rectangle((0, 0), 1, 1, fill=False, color=colours[m], ls=styles[m], label=m) for m in algorithms]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
