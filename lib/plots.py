"""Plotting helpers shared by the stages' figures (matplotlib only; no stage logic)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def plot_against_sparsity(frame: pd.DataFrame, metric: str, ax=None, label_by=("arch", "method"), title: str | None = None,
                          ylabel: str | None = None, x: str = "sparsity"):
    """One line per (arch, method): ``metric`` against sparsity, checkpoints marked.

    ``x``: ``sparsity`` (measured) or ``target`` (the plan's nominal sparsity: weights that regrow while
    retraining leave a measured sparsity near 0)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    keys = [k for k in label_by if k in frame.columns]
    groups = frame.groupby(keys) if keys else [((), frame)]
    for key, part in groups:
        part = part.sort_values(x)
        label = " / ".join(map(str, key if isinstance(key, tuple) else (key,)))
        ax.plot(part[x] * 100, part[metric], marker="o", ms=3, label=label or metric)
    ax.set_xlabel(f"{'target ' if x == 'target' else ''}sparsity of prunable weights (%)")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax
