"""Study B's unit-interpretability analyses: MIS for every checkpoint of a pruning run, and its controls.

``score_checkpoints`` runs one forward pass per checkpoint over the pool and scores every unit of
the chosen layers with every similarity backend; the tables it returns feed the analyses below:
MIS against sparsity with a rank correlation, the classifier's units against per-class accuracy,
the chance-accuracy controls (random re-initialisation, pruning to collapse) and per-layer profiles.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from lib.io import progress_bar as tqdm

from lib import io
from lib.checkpoints import iter_checkpoints, prune_global_magnitude, validate_source
from lib.data.image_pool import ImagePool
from lib.mis.activations import OUTPUT_LAYERS, constant_units, resolve_layers, unit_activations
from lib.mis.embeddings import cached_embeddings
from lib.mis.score import MIS, UnitScores, single_thread
from lib.mis.similarity import SimilarityBackend, similarity_matrix
from lib.mis.tasks import TaskConfig
from lib.models import get_spec
from lib.plots import accuracy_axis, colour, legend_beside, legend_below, styled

CONTROL_KEYS = {"random_init", "collapse_sparsity"}


def check_stage(p: dict) -> list[tuple]:
    """The MIS stages' parameters (``mis`` and ``mis_embeddings``), checked before any compute; returns the
    input paths they read."""
    from lib.data.image_pool import POOL_KEYS
    from lib.mis.similarity import BackendUnavailable, create_backend
    from lib.params import check_options

    check_options(p["pool"], POOL_KEYS, "pool")
    for spec in p["backends"]:
        try:
            create_backend(spec)
        except BackendUnavailable as error:
            raise ValueError(str(error)) from None
    if "tasks" in p:
        TaskConfig.from_dict(p["tasks"])
    return [("pool.folder", p["pool"]["folder"], "pool")] if "folder" in p["pool"] else []


def build_scorers(pool: ImagePool, backends: list[SimilarityBackend], cache_dir, tasks: TaskConfig, alpha: float,
                  aggregation: str = "mean", seed: int = 0, progress: bool = True) -> dict[str, MIS]:
    """One MIS scorer per backend, on the pool's cached embeddings (the first backend is the primary one)."""
    names = [b.name for b in backends]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"give one or more distinct similarity backends, got {names}")
    return {b.name: MIS(similarity_matrix(cached_embeddings(pool, b, cache_dir, progress)), tasks, alpha, aggregation,
                        seed) for b in backends}


def metric_name(metric: str, backend: str, primary: str) -> str:
    """Row column of a metric: plain for the primary backend (``mis``), suffixed for others (``mis_pixel``)."""
    return metric if backend == primary else f"{metric}_{backend}"


@dataclass
class MISRun:
    """Tables of one run: a row per checkpoint (or control), per layer, per unit and per class."""

    checkpoints: pd.DataFrame
    layers: pd.DataFrame
    units: pd.DataFrame
    classes: pd.DataFrame
    examples: list = field(default_factory=list)


def score_units(activations: dict[str, torch.Tensor], scorers: dict[str, MIS]) -> dict[str, dict[str, UnitScores]]:
    """``{backend: {layer: scores}}``. Tasks depend on the activations only: built once, scored by every backend."""
    primary = next(iter(scorers))
    if any((s.tasks, s.seed) != (scorers[primary].tasks, scorers[primary].seed) for s in scorers.values()):
        raise ValueError("every backend's scorer must use the same task counts and seed")
    names, sizes = list(activations), [len(a) for a in activations.values()]
    stacked = torch.cat(list(activations.values()))
    with single_thread():
        tasks, constant = scorers[primary].build_tasks(stacked), constant_units(stacked)
        return {backend: dict(zip(names, _split(scorer.score(tasks, constant), sizes)))
                for backend, scorer in scorers.items()}


def model_level(scores: dict[str, UnitScores]) -> dict:
    """MIS of a model: mean and 5/95 percentiles over its hidden units, share solved, and the output layers' means."""
    hidden = [s for name, s in scores.items() if name not in OUTPUT_LAYERS]
    mis = torch.cat([s.mis for s in hidden]).numpy() if hidden else np.zeros(0)
    solved = torch.cat([s.solved for s in hidden]).numpy() if hidden else np.zeros(0)
    valid = mis[np.isfinite(mis)]
    return {"mis": _nanmean(mis), "mis_p05": _percentile(valid, 5), "mis_p95": _percentile(valid, 95),
            "solved": _nanmean(solved), **{f"mis_{out}": _nanmean(scores[out].mis) for out in OUTPUT_LAYERS if out in scores},
            "units": len(mis), "constant_units": int(len(mis) - len(valid))}


def score_model(model: nn.Module, model_name: str, pool: ImagePool, scorers: dict[str, MIS], layers=None,
                batch_size: int = 128, record: dict | None = None, keep_examples: bool = False) -> MISRun:
    """Every unit of ``layers`` (default: every block, logits, softmax) of one model, under every backend."""
    spec = get_spec(model_name)
    layers = resolve_layers(model, model_name, layers)
    activations = unit_activations(model, pool, layers, spec.mean, spec.std, batch_size,
                                   nhwc_layers=[layer for layer in layers if spec.nhwc(layer)])
    record = dict(record or {})
    keys = {k: record[k] for k in ("step", "sparsity", "control") if k in record}
    primary = next(iter(scorers))
    row = {**record, "pool_acc": _pool_accuracy(activations, pool)}
    units, layer_rows, classes, examples = [], [], [], []
    for backend, scores in score_units(activations, scorers).items():
        level = model_level(scores)
        counts = {k: level.pop(k) for k in ("units", "constant_units")}
        row.update({metric_name(k, backend, primary): v for k, v in level.items()})
        row.update(counts if backend == primary else {})
        for depth, (name, s) in enumerate(scores.items()):
            units.append(pd.DataFrame({**keys, "backend": backend, "layer": name, "unit": np.arange(len(s.mis)),
                                       "constant": s.constant.numpy(), "mis": s.mis.numpy(), "solved": s.solved.numpy()}))
            layer_rows.append({**keys, "backend": backend, "layer": name, "depth": depth, "units": len(s.mis),
                               "constant": int(s.constant.sum()), "mis": _nanmean(s.mis), "solved": _nanmean(s.solved)})
        classes.append(_class_table(scores, activations, pool, {**keys, "backend": backend}))
        if backend == primary and keep_examples:
            examples = _examples(scores)
    return MISRun(pd.DataFrame([row]), pd.DataFrame(layer_rows), pd.concat(units, ignore_index=True),
                  pd.concat(classes, ignore_index=True), examples)


def score_checkpoints(source, pool: ImagePool, scorers: dict[str, MIS], layers=None, controls: dict | None = None,
                      batch_size: int = 128, seed: int = 0, progress: bool = True,
                      device: str | torch.device = "cpu") -> tuple[MISRun, MISRun]:
    """(run over every checkpoint of ``source``, run over the controls of its densest checkpoint (empty if none)).
    ``device``: where the models compute the unit activations."""
    validate_source(source)
    controls = check_controls(controls)
    runs, dense = [], None
    for record, model in tqdm(iter_checkpoints(source), desc="checkpoints", disable=not progress):
        record = {k: record[k] for k in ("step", "sparsity", "test_acc", "model") if k in record}
        model = model.to(device)
        runs.append(score_model(model, record["model"], pool, scorers, layers, batch_size, record, keep_examples=not runs))
        if dense is None:
            dense = (record, model)
    run = _concat(runs)
    if not controls or dense is None:
        return run, MISRun(*(pd.DataFrame() for _ in range(4)))
    control_runs = [score_model(m, dense[0]["model"], pool, scorers, layers, batch_size,
                                {"control": name, "sparsity": sparsity, "model": dense[0]["model"]})
                    for name, sparsity, m in control_models(dense[1], dense[0]["model"], controls, seed)]
    return run, _concat(control_runs)


def check_controls(controls: dict | None) -> dict:
    """The controls' parameters, validated before any compute."""
    controls = dict(controls or {})
    unknown = set(controls) - CONTROL_KEYS
    if unknown:
        raise ValueError(f"unknown control(s) {sorted(unknown)}; known: {sorted(CONTROL_KEYS)}")
    if controls.get("collapse_sparsity") and not 0 < controls["collapse_sparsity"] < 1:
        raise ValueError(f"collapse_sparsity must be in (0, 1), got {controls['collapse_sparsity']}")
    return controls


def control_models(model: nn.Module, model_name: str, controls: dict, seed: int = 0):
    """(name, sparsity, model) of the chance-accuracy controls built from ``model`` (left untouched).

    random_init: the same architecture with freshly initialised weights (seeded).
    collapse_sparsity: the model pruned one-shot by global magnitude to that sparsity, without retraining.
    """
    out = []
    if controls.get("random_init"):
        out.append(("random_init", 0.0, reinitialised(model, seed)))
    if controls.get("collapse_sparsity"):
        sparsity = float(controls["collapse_sparsity"])
        spec = get_spec(model_name)
        collapsed = copy.deepcopy(model)
        report = prune_global_magnitude(collapsed, sparsity, exclude=(spec.classifier,) if spec.classifier else ())
        out.append(("collapse", report["sparsity"], collapsed.eval()))
    return out


def reinitialised(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every module's default initialisation redrawn (loose parameters ~ N(0, 0.02))."""
    torch.manual_seed(seed)
    fresh = copy.deepcopy(model)
    covered = set()
    for module in fresh.modules():
        if hasattr(module, "reset_parameters") and module is not fresh:
            module.reset_parameters()
            covered.update(id(p) for p in module.parameters(recurse=False))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    with torch.no_grad():
        for p in fresh.parameters():
            if id(p) not in covered:  # e.g. a ViT's position embedding and class token
                nn.init.normal_(p, std=0.02)
    return fresh.eval()


# ----------------------------------------------------------------------------- analyses
def rank_correlation(x, y) -> dict:
    """Spearman's rho of ``y`` against ``x`` with its two-sided p-value (pairs with a missing value dropped)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return {"rho": float("nan"), "p": float("nan"), "n": n}
    result = spearmanr(x[keep], y[keep])
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": n}


def trend_table(checkpoints: pd.DataFrame, x: str = "sparsity") -> pd.DataFrame:
    """Rank correlation of every MIS column of the checkpoint table with ``x`` (one row per metric)."""
    metrics = [c for c in checkpoints.columns if c.startswith(("mis", "solved")) and "_p0" not in c and "_p9" not in c]
    return pd.DataFrame([{"metric": m, **rank_correlation(checkpoints[x], checkpoints[m])} for m in metrics])


def class_table_correlations(classes: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and backend: rank correlation across classes of the logit/softmax unit's MIS with class accuracy."""
    if classes.empty:
        return pd.DataFrame()
    keys = [k for k in ("step", "sparsity", "control", "backend") if k in classes.columns]
    rows = []
    for key, part in classes.groupby(keys, dropna=False):
        for out in OUTPUT_LAYERS:
            if f"mis_{out}" in part:
                rows.append({**dict(zip(keys, key)), "layer": out,
                             **rank_correlation(part["accuracy"], part[f"mis_{out}"])})
    return pd.DataFrame(rows)


def save_tables(out_dir, run: MISRun, controls: MISRun | None = None) -> None:
    """``per_unit.csv`` (every unit of every checkpoint and control), ``plots/mis_layers.csv``, ``plots/mis_classes.csv``."""
    from pathlib import Path

    out_dir = Path(out_dir)
    tables = {"per_unit.csv": "units", "plots/mis_layers.csv": "layers", "plots/mis_classes.csv": "classes"}
    for path, name in tables.items():
        frames = [getattr(r, name) for r in (run, controls) if r is not None and not getattr(r, name).empty]
        if frames:
            io.write_bytes(out_dir / path, pd.concat(frames, ignore_index=True).to_csv(index=False).encode())


# ----------------------------------------------------------------------------- figures
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
def _concat(runs: list[MISRun]) -> MISRun:
    return MISRun(*(pd.concat([getattr(r, f) for r in runs], ignore_index=True)
                    for f in ("checkpoints", "layers", "units", "classes")),
                  examples=[e for r in runs for e in r.examples])


def _split(scores: UnitScores, sizes: list[int]) -> list[UnitScores]:
    """Per-layer slices of the scores of stacked units."""
    bounds = np.cumsum([0] + sizes)
    return [UnitScores(scores.mis[a:b], scores.solved[a:b], scores.constant[a:b], scores.delta[a:b], scores.tasks[a:b])
            for a, b in zip(bounds[:-1], bounds[1:])]


def _pool_accuracy(activations: dict, pool: ImagePool) -> float:
    if pool.labels is None or "logits" not in activations and "softmax" not in activations:
        return float("nan")
    outputs = activations.get("logits", activations.get("softmax"))
    return float((outputs.argmax(0).numpy() == pool.labels).mean())


def _class_table(scores: dict, activations: dict, pool: ImagePool, keys: dict) -> pd.DataFrame:
    """One row per class present in the pool: its accuracy and the MIS of its logit/softmax units."""
    outputs = [out for out in OUTPUT_LAYERS if out in scores]
    if pool.labels is None or not outputs:
        return pd.DataFrame()
    predicted = activations[outputs[0]].argmax(0).numpy()
    n_classes = len(scores[outputs[0]].mis)
    labels = pool.labels
    if labels.max() >= n_classes:
        warnings.warn(f"pool labels go up to {labels.max()} but the model has {n_classes} outputs: no per-class table")
        return pd.DataFrame()
    count = np.bincount(labels, minlength=n_classes)
    correct = np.bincount(labels, weights=(predicted == labels), minlength=n_classes)
    present = np.flatnonzero(count)
    table = {**keys, "class": present, "images": count[present], "accuracy": correct[present] / count[present]}
    table.update({f"mis_{out}": scores[out].mis.numpy()[present] for out in outputs})
    table.update({f"solved_{out}": scores[out].solved.numpy()[present] for out in outputs})
    return pd.DataFrame(table)


def _examples(scores: dict) -> list:
    """Task 0 of the most and the least interpretable hidden unit."""
    candidates = [(float(s.mis[u]), name, u) for name, s in scores.items() if name not in OUTPUT_LAYERS
                  for u in torch.nonzero(~s.mis.isnan()).flatten().tolist()]
    if not candidates:
        return []
    chosen = [max(candidates), min(candidates)]
    out = []
    for mis, name, unit in chosen:
        t = scores[name].tasks
        out.append({"label": f"{name}[{unit}] MIS {mis:.2f}", "positive": t.positive[unit, 0].tolist(),
                    "negative": t.negative[unit, 0].tolist(), "query_max": int(t.query_max[unit, 0]),
                    "query_min": int(t.query_min[unit, 0])})
    return out


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _fmt(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
