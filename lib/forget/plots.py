"""The forget figures: flips and PIEs against sparsity, per-class changes, the most forgotten images, and the
forgotten images' scores on the other dimensions."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.plots import accuracy_axis, colour, legend_below, styled


@styled
def plot_forgetting(rows, population: bool, title: str = "", chance: float | None = None):
    """Share of images that flip (and, with a population of seeds, that are PIEs) against sparsity; accuracy on
    the evaluated images on a second axis from 0 with ``chance`` dashed."""
    frame = pd.DataFrame(rows).sort_values("sparsity")
    fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    x = frame["sparsity"] * 100
    ax.plot(x, frame["flip_share"] * 100, marker="o", ms=3, color=colour("flip"), label="flips (vs own dense)")
    if population:
        ax.plot(x, frame["pie_share"] * 100, marker="D", ms=3, color=colour("PIE"), label="PIEs (modal labels)")
    ax.set_xlabel("sparsity of prunable weights (%)")
    ax.set_ylabel("images (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(x, frame["acc"], color="grey", ls=":", marker="s", ms=3, label="accuracy (mean over seeds)")
    accuracy_axis(twin, chance, label="accuracy")
    seeds = int(frame["seeds"].max())
    ax.set_title(title + (f" ({seeds} seeds)" if population else " (1 seed: flips only, PIEs need a population)"))
    legend_below(fig, ncol=3)
    return fig


@styled
def plot_class_changes(classes: pd.DataFrame, class_names=None, title: str = ""):
    """Per class (rows) and sparsity (columns): the change of the class's accuracy from the dense population
    (percentage points, mean over seeds); a star where Welch's test of its change relative to top-1 is
    significant after the correction."""
    if classes.empty:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no pruned checkpoint", ha="center", va="center")
        ax.axis("off")
        return fig
    change = classes.pivot(index="class", columns="step", values="change") * 100
    marks = classes.pivot(index="class", columns="step", values="significant").astype(bool)
    sparsity = classes.groupby("step")["sparsity"].first()
    limit = max(float(np.nanmax(np.abs(change.to_numpy()))), 1.0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * change.shape[1], 0.9 + 0.32 * change.shape[0]), layout="constrained")
    image = ax.imshow(change.to_numpy(), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (r, c), value in np.ndenumerate(change.to_numpy()):
        star = "*" if marks.to_numpy()[r, c] else ""
        ax.text(c, r, f"{value:+.0f}{star}", ha="center", va="center", fontsize=8,
                color="white" if abs(value) > 0.6 * limit else "black")
    labels = [class_names[c] if class_names is not None else str(c) for c in change.index]
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xticks(range(change.shape[1]), [f"{sparsity[s] * 100:.0f}%" for s in change.columns])
    ax.set_xlabel("sparsity of prunable weights")
    fig.colorbar(image, ax=ax, label="class accuracy change (pp)")
    correction = classes["correction"].iloc[0]
    note = (f"* Welch p <= alpha after {correction} over the classes" if classes["p_value"].notna().any() else
            "Welch's t over seeds needs two seeds or more")
    ax.set_title(f"{title}\n{note}" if title else note)
    return fig


@styled
def plot_gallery(pictures: np.ndarray, ids, forgotten: pd.DataFrame, class_names=None, columns: int = 6):
    """The most forgotten images (``lib.forget.metrics.most_forgotten``), each titled with its id, its label, the
    dense population's modal label and, at the sparsity where it is first forgotten, the label it is forgotten to."""
    count = len(forgotten)
    if count == 0:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no image is forgotten at any sparsity", ha="center", va="center")
        ax.axis("off")
        return fig
    index = {str(i): n for n, i in enumerate(ids)}
    name = (lambda c: class_names[int(c)]) if class_names is not None else (lambda c: str(int(c)))  # noqa: E731
    columns = min(columns, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, item) in zip(axes.flat, forgotten.iterrows()):
        ax.imshow(pictures[index[str(item["image"])]])
        ax.set_title(f"{item['image']}\nlabel: {name(item['label'])}\ndense: {name(item['dense_modal'])}\n"
                     f"{item['first_sparsity'] * 100:.0f}%: {name(item['modal_then'])}", fontsize=7.5)
    fig.tight_layout(pad=0.4, h_pad=1.2)
    return fig


@styled
def plot_dimensions(compare: pd.DataFrame, title: str = ""):
    """For each joined dimension (a panel): its mean over the forgotten images and over the kept ones against
    sparsity (``lib.forget.metrics.compare_forgotten``)."""
    dimensions = list(dict.fromkeys(compare["dimension"])) if not compare.empty else []
    if not dimensions:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no other stage's per-image table to join", ha="center", va="center")
        ax.axis("off")
        return fig
    cols = min(3, len(dimensions))
    nrows = -(-len(dimensions) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.7 * cols, 2.9 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(dimensions):]:
        ax.axis("off")
    for ax, dimension in zip(axes.flat, dimensions):
        part = compare[compare["dimension"] == dimension].sort_values("sparsity")
        x = part["sparsity"] * 100
        ax.plot(x, part["forgotten"], marker="o", ms=3, color=colour("forgotten"), label="forgotten images")
        ax.plot(x, part["kept"], marker="s", ms=3, color=colour("kept"), ls="--", label="kept images")
        ax.set_title(dimension)
        ax.set_xlabel("sparsity (%)")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    legend_below(fig, ncol=2)
    return fig
