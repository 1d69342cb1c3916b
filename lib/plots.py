"""Plotting helpers shared by the stages' figures (matplotlib only; no stage logic).

Every figure of the repository follows the same rules, kept here so that they hold everywhere:

- one colour per name (attribution, discovery or pruner, architecture, condition): :func:`colour`;
- legends outside the data: :func:`legend_beside` (one axes) or :func:`legend_below` (one per figure);
- accuracy axes show chance (a dashed line inside the y-range) or say why not: :func:`accuracy_axis`;
- fonts legible at the README's display width: :func:`styled` (a figure at most ~11 in wide at 120 dpi is
  shown at about 0.65 of its size there, so no text is smaller than 9 pt).
"""

from __future__ import annotations

import functools
import zlib

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.colors import to_hex, to_rgb
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import MaxNLocator

# The names the repository plots, each with its own colour. Names of different kinds that never share a
# figure may share a hue; within a kind every colour is distinct.
COLOURS = {
    # attributions (lib.interpret.methods.ATTRIBUTIONS)
    "gradcam": "#1f77b4", "guided_gradcam": "#ff7f0e", "ig_smoothgrad": "#2ca02c", "saliency": "#d62728",
    "attention": "#9467bd", "rollout": "#8c564b",
    # object discovery algorithms (lib.discover.methods.ALGORITHMS) and their baseline
    "lost": "#e377c2", "tokencut": "#17becf", "centred box": "#7f7f7f",
    # pruners, criteria and schedules (params.yaml, presets/); "<criterion>-iterative" is a lighter
    # shade of "<criterion>-oneshot" (see colour)
    "lrr": "#262626", "unstructured": "#1b9e77", "filters": "#bcbd22", "connections": "#a6761d",
    "oneshot_magnitude": "#e7298a", "studyB": "#666666", "dense": "#000000",
    # architectures
    "cnn": "#1f78b4", "vit": "#e31a1c", "resnet20": "#33a02c", "resnet56": "#ff7f00",
    "efficientnet_lite0": "#6a3d9a", "googlenet": "#b15928", "resnet18": "#a6cee3", "resnet50": "#fb9a99",
    "vit_b32": "#b2df8a", "swin_v2_t": "#fdbf6f",
    # conditions and controls
    "humans": "#a51e37",  # modelvshuman.plotting.colors.red
    "random_init": "#984ea3", "collapse": "#e6ab02", "uniform map": "#000000", "chance": "#595959",
}
# Names not listed above: a colour of this list chosen by a checksum of the name (the same in every run).
FALLBACK = ("#9c9ede", "#8c6d31", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
            "#636363")
SCHEDULES = {"oneshot": 0.0, "iterative": 0.45}  # "<criterion>-<schedule>": how much white mixes in

# Text sizes legible at the README's display width (see the module's docstring).
STYLE = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
         "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 11.5}


def colour(name) -> str:
    """The colour of ``name`` in every figure of the repository (hex)."""
    name = str(name)
    if name in COLOURS:
        return to_hex(COLOURS[name])
    criterion, _, schedule = name.rpartition("-")
    if criterion in COLOURS and schedule in SCHEDULES:
        white = SCHEDULES[schedule]
        return to_hex(tuple((1 - white) * c + white for c in to_rgb(COLOURS[criterion])))
    return FALLBACK[zlib.crc32(name.encode()) % len(FALLBACK)]


def styled(plot):
    """Draw ``plot``'s figure with the repository's text sizes (fonts are fixed when the text is created)."""
    @functools.wraps(plot)
    def draw(*args, **kwargs):
        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)
    return draw


def _unique(handles, labels):
    seen = {}
    for handle, label in zip(handles, labels):
        if label and not label.startswith("_") and label not in seen:
            seen[label] = handle
    return list(seen.values()), list(seen)


def legend_beside(ax, handles=None, labels=None, title: str | None = None):
    """The legend of ``ax`` to the right of its axes (outside the data); none when nothing is labelled."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    handles, labels = _unique(handles, labels)
    if not handles:
        return None
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                     frameon=False, title=title)


def legend_below(fig, axes=None, ncol: int | None = None, title: str | None = None, extra=()):
    """One legend for the whole figure, below its panels: every labelled artist of ``axes`` (default: all
    axes of ``fig``, twins included) once, plus ``extra`` (handle, label) pairs. Call after the layout."""
    handles, labels = [], []
    for ax in axes if axes is not None else fig.axes:
        h, l = ax.get_legend_handles_labels()
        handles += h
        labels += l
    for h, l in extra:
        handles.append(h)
        labels.append(l)
    handles, labels = _unique(handles, labels)
    if not handles:
        return None
    ncol = ncol or min(len(labels), 4)
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):  # the layout makes room below the panels
        return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, title=title)
    # Otherwise hang it under the figure: save_figure's tight bounding box takes it in.
    return fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False,
                      title=title)


def accuracy_axis(ax, chance: float | None, scale: float = 1.0, label: str | None = None):
    """An accuracy y-axis that shows chance: a dashed line at ``chance`` and a range from 0 (so chance is in
    it); without a known chance level the range still starts at 0 and the label says chance is not given.
    ``scale``: 100 for axes in %."""
    top = max(ax.get_ylim()[1], (chance or 0) * scale)
    ax.set_ylim(0, min(top * 1.04, 1.02 * scale))
    if chance is not None:
        unit = "%" if scale == 100 else ""
        ax.axhline(chance * scale, color=colour("chance"), ls="--", lw=1, label=f"chance ({chance * scale:.3g}{unit})")
    if label is not None:
        ax.set_ylabel(label if chance is not None else f"{label}\n(from 0; chance not given)")
    return ax


def chance_of(source) -> float | None:
    """Chance accuracy of a classifier of this library: 1 / its classes. ``source``: a checkpoint file or a
    prune stage's folder (its first checkpoint); None for anything else (a dict source, a missing file)."""
    from pathlib import Path

    from lib import storage
    from lib.results import MANIFEST, list_checkpoints

    if not isinstance(source, (str, Path)):
        return None
    if (Path(source) / MANIFEST).is_file():
        source = list_checkpoints(source)[0]["path"]
    if not Path(source).is_file():
        return None
    payload = storage.load_torch(source)
    classes = (payload.get("model") or {}).get("num_classes") if isinstance(payload, dict) else None
    return 1 / classes if classes else None


def chance_levels(source) -> dict:
    """What a stage's ``metrics.json`` records as ``chance`` for the accuracy of the networks of ``source`` (see
    :func:`chance_of`): ``{"test_acc": 1 / classes}``, or ``{}`` where the classes are unknown."""
    chance = chance_of(source)
    return {} if chance is None else {"test_acc": chance}


def plot_against_sparsity(frame: pd.DataFrame, metric: str, ax=None, label_by=("arch", "plan"), title: str | None = None,
                          ylabel: str | None = None, legend: bool = True, x: str = "sparsity"):
    """One line per (arch, plan): ``metric`` against sparsity, checkpoints marked.

    The colour is the plan's (:func:`colour` of the last key of ``label_by`` present), the line style
    tells the other keys apart (several architectures in one panel). ``legend``: beside the axes; pass
    False and call :func:`legend_below` for one legend per figure. ``x``: ``sparsity`` (measured) or
    ``target`` (the plan's nominal sparsity: weights that regrow while retraining leave a measured
    sparsity near 0).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    keys = [k for k in label_by if k in frame.columns]
    groups = list(frame.groupby(keys)) if keys else [((), frame)]
    others = sorted({key[:-1] for key, _ in groups if isinstance(key, tuple)})
    styles = dict(zip(others, ["-", "--", ":", "-."] * len(others)))
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        part = part.sort_values(x)
        label = " / ".join(map(str, key))
        ax.plot(part[x] * 100, part[metric], marker="o", ms=3, label=label or metric,
                color=colour(key[-1]) if key else colour(metric), ls=styles.get(key[:-1], "-"))
    ax.set_xlabel(f"{'target ' if x == 'target' else ''}sparsity of prunable weights (%)")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        legend_beside(ax)
    return ax


@styled
def plot_learning_curves(history: pd.DataFrame, title: str = "", chance: float | None = None,
                         columns=("train_acc", "val_acc")):
    """Accuracy per epoch of each of ``columns`` (training's history), chance dashed, the legend beside."""
    fig, ax = plt.subplots(figsize=(5.2, 3.2), layout="constrained")
    for column, style in zip(columns, ("-", "--", ":")):
        if column in history:
            ax.plot(history["epoch"], history[column], marker="o", ms=3, ls=style, label=column.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    accuracy_axis(ax, chance, label="accuracy")
    if title:
        ax.set_title(title)
    legend_beside(ax)
    return fig
