"""Study B's unit interpretability: MIS for every checkpoint of a pruning run, and its controls.

``score_checkpoints`` runs the analyses' checkpoint loop (``lib.analysis``: with ``state_dir`` an
interrupted run resumes): one forward pass per checkpoint over the pool, every unit of the chosen layers
scored with every similarity backend. Then the chance-accuracy controls of the dense checkpoint (random
re-initialisation, pruning to collapse). The tables it returns feed ``lib.mis.metrics`` (MIS against
sparsity with a rank correlation, the classifier's units against per-class accuracy) and ``lib.mis.plots``.

:func:`configure` checks and parses the stage's parameters once, into the :class:`MISRun` that notebook 06 runs
(:func:`build_scorers` of its backends, then :func:`score`); the stage's check (:func:`check_stage`) is the same call
before the notebook starts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib import analysis, storage
from lib.analysis import Scored, digest
from lib.checkpoints import iter_checkpoints, prune_global_magnitude, validate_source
from lib.data.image_pool import ImagePool
from lib.mis.activations import OUTPUT_LAYERS, constant_units, resolve_layers, unit_activations
from lib.mis.embeddings import cached_embeddings
from lib.mis.methods import DEFAULT_ALPHA, MIS, UnitScores, single_thread
from lib.mis.metrics import class_table, metric_name, model_level, nanmean, pool_accuracy
from lib.mis.similarity import SimilarityBackend, similarity_matrix
from lib.mis.tasks import TaskConfig
from lib.models import get_spec

CONTROL_NAMES = {"random_init": "random_init", "collapse_sparsity": "collapse"}  # parameter -> control, in order
CONTROL_KEYS = set(CONTROL_NAMES)


@dataclass(frozen=True)
class MISRun:
    """Study B's MIS run with every parameter checked and parsed (:func:`configure`): what notebook 06 runs.

    ``pool``: ``lib.data.image_pool.load_pool``'s spec (the embedded dataset's in ``data_dir``); ``backends``: the
    similarity backends, built (the first is the primary one), their embeddings cached in ``embeddings_dir``;
    ``tasks``: the task counts; ``alpha``, ``aggregation``, ``seed``: the scorer's (``lib.mis.methods.MIS``);
    ``layers``: the units scored (None: every block, logits, softmax); ``controls``: the chance-accuracy controls
    of the dense checkpoint (:func:`check_controls`); ``batch_size``: pool images a forward pass."""

    source: str | None
    data_dir: str | None
    pool: dict
    backends: tuple[SimilarityBackend, ...]
    tasks: TaskConfig
    embeddings_dir: str | None = None
    layers: list | None = None
    alpha: float = DEFAULT_ALPHA
    aggregation: str = "mean"
    controls: dict = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 128
    state_dir: str | None = None


def configure(source, data_dir, pool: dict, backends: list[dict], tasks: dict | None = None, embeddings_dir=None,
              layers=None, alpha: float = DEFAULT_ALPHA, aggregation: str = "mean", controls: dict | None = None, seed: int = 0,
              batch_size: int = 128, state_dir=None, exists: bool = True) -> MISRun:
    """The MIS stages' one check and parse, before any compute: the parameters of notebook 06 (and of the
    ``mis_embeddings`` stage: its pool and backends) as a :class:`MISRun`. :func:`check_stage` calls it with
    ``exists`` False (before the notebook starts); the notebook with ``exists`` True (``source`` is then a prune
    stage's output, every checkpoint the file that stage wrote) and runs what it returns."""
    from lib.data.image_pool import POOL_KEYS
    from lib.mis.methods import AGGREGATIONS
    from lib.mis.similarity import BackendUnavailable, create_backend
    from lib.params import check_at_least, check_options

    check_at_least({"batch_size": batch_size}, {"batch_size": 1})
    check_options(pool, POOL_KEYS, "pool")
    try:
        built = tuple(create_backend(spec) for spec in backends)
    except BackendUnavailable as error:
        raise ValueError(str(error)) from None
    names = [b.name for b in built]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"give one or more distinct similarity backends, got {names}")
    task_config = TaskConfig.from_dict(tasks)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
    if not alpha > 0:
        raise ValueError(f"alpha (the sigmoid's scale) must be positive, got {alpha}")
    controls = check_controls(controls)
    if exists and source is not None:
        validate_source(source)
    return MISRun(None if source is None else str(source), None if data_dir is None else str(data_dir), dict(pool),
                  built, task_config, None if embeddings_dir is None else str(embeddings_dir), layers, alpha,
                  aggregation, controls, seed, batch_size, None if state_dir is None else str(state_dir))


def check_stage(p: dict) -> list[tuple]:
    """The MIS stages' parameters (``mis`` and ``mis_embeddings``), checked before any compute (:func:`configure`);
    returns the input paths they read."""
    run = configure(p.get("source"), p.get("data_dir"), p["pool"], p["backends"], p.get("tasks"),
                    p.get("embeddings_dir"), p.get("layers"), p.get("alpha", DEFAULT_ALPHA), p.get("aggregation", "mean"),
                    p.get("controls"), p.get("seed", 0), p.get("batch_size", 128), exists=False)
    return [("pool.folder", run.pool["folder"], "pool")] if "folder" in run.pool else []


def build_scorers(pool: ImagePool, backends: list[SimilarityBackend], cache_dir, tasks: TaskConfig, alpha: float,
                  aggregation: str = "mean", seed: int = 0, progress: bool = True) -> dict[str, MIS]:
    """One MIS scorer per backend, on the pool's cached embeddings (the first backend is the primary one)."""
    names = [b.name for b in backends]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"give one or more distinct similarity backends, got {names}")
    return {b.name: MIS(similarity_matrix(cached_embeddings(pool, b, cache_dir, progress)), tasks, alpha, aggregation,
                        seed) for b in backends}


@dataclass
class MISTables:
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


def score_model(model: nn.Module, model_name: str, pool: ImagePool, scorers: dict[str, MIS], layers=None,
                batch_size: int = 128, record: dict | None = None, keep_examples: bool = False) -> MISTables:
    """Every unit of ``layers`` (default: every block, logits, softmax) of one model, under every backend."""
    spec = get_spec(model_name)
    layers = resolve_layers(model, model_name, layers)
    activations = unit_activations(model, pool, layers, spec.mean, spec.std, batch_size,
                                   nhwc_layers=[layer for layer in layers if spec.nhwc(layer)])
    record = dict(record or {})
    keys = {k: record[k] for k in ("step", "sparsity", "control") if k in record}
    primary = next(iter(scorers))
    row = {**record, "pool_acc": pool_accuracy(activations, pool)}
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
                               "constant": int(s.constant.sum()), "mis": nanmean(s.mis), "solved": nanmean(s.solved)})
        classes.append(class_table(scores, activations, pool, {**keys, "backend": backend}))
        if backend == primary and keep_examples:
            examples = _examples(scores)
    return MISTables(pd.DataFrame([row]), pd.DataFrame(layer_rows), pd.concat(units, ignore_index=True),
                  pd.concat(classes, ignore_index=True), examples)


def score_checkpoints(source, pool: ImagePool, scorers: dict[str, MIS], layers=None, controls: dict | None = None,
                      batch_size: int = 128, seed: int = 0, progress: bool = True,
                      device: str | torch.device = "cpu", state_dir=None) -> tuple[MISTables, MISTables]:
    """(run over every checkpoint of ``source``, run over the controls of its densest checkpoint (empty if none)).
    ``device``: where the models compute the unit activations; ``state_dir``: where each finished checkpoint
    and control is kept, so that a rerun after an interruption resumes (``lib.analysis``)."""
    validate_source(source)
    return score_units_of(source, pool, scorers, layers, check_controls(controls), batch_size, seed, progress, device,
                          state_dir)


def score(run: MISRun, pool: ImagePool, scorers: dict[str, MIS], progress: bool = True,
          device: str | torch.device = "cpu") -> tuple[MISTables, MISTables]:
    """:func:`score_checkpoints` of a checked :class:`MISRun` (``pool``: its pool loaded; ``scorers``:
    :func:`build_scorers` of its backends)."""
    return score_units_of(run.source, pool, scorers, run.layers, run.controls, run.batch_size, run.seed, progress,
                          device, run.state_dir)


def score_units_of(source, pool: ImagePool, scorers: dict[str, MIS], layers, controls: dict, batch_size: int,
                   seed: int, progress: bool, device, state_dir) -> tuple[MISTables, MISTables]:
    """:func:`score_checkpoints` with its parameters already checked."""
    key = {"pool": pool.fingerprint(), "layers": layers, "batch_size": batch_size,
           "scorers": [(name, digest(s.similarity), vars(s.tasks), s.alpha, s.aggregation, s.seed)
                       for name, s in scorers.items()]}
    first = {}  # the first checkpoint scored here, kept for the controls

    def score_one(record: dict, model) -> Scored:
        record = {k: record[k] for k in ("step", "sparsity", "test_acc", "model") if k in record}
        first.setdefault("checkpoint", (record, model))
        return _scored(score_model(model, record["model"], pool, scorers, layers, batch_size, record,
                                   keep_examples=True))

    done = analysis.score_checkpoints(source, score_one, key, state_dir, device=device, progress=progress)
    runs = [MISTables(extra["checkpoints"], extra["layers"], units, extra["classes"],
                   extra["examples"] if i == 0 else [])  # the examples of the dense checkpoint only
            for i, (extra, units) in enumerate(zip(done.extras.values(), _per_checkpoint(done.items, done.records)))]
    run = _concat(runs)
    names = [CONTROL_NAMES[k] for k in CONTROL_NAMES if controls.get(k)]
    if not names or not done.records:
        return run, MISTables(*(pd.DataFrame() for _ in range(4)))
    dense = done.records[0]
    state = analysis.State(state_dir, {**key, "device": str(device), "controls": controls, "seed": seed})
    kept = {name: state.load(dense, name) for name in names}
    if any(scored is None for scored in kept.values()):
        record, model = first.get("checkpoint", (None, None))
        if record is None or record["step"] != dense["step"]:  # resumed: the dense checkpoint was kept
            _, model = next(iter(iter_checkpoints(source)))
            model = model.to(device)
        for name, sparsity, control in control_models(model, dense["model"], controls, seed):
            if kept[name] is None:
                kept[name] = _scored(score_model(control, dense["model"], pool, scorers, layers, batch_size,
                                                 {"control": name, "sparsity": sparsity, "model": dense["model"]}))
                state.save(dense, kept[name], name)
    return run, _concat([MISTables(k.extra["checkpoints"], k.extra["layers"], k.items, k.extra["classes"],
                                k.extra["examples"]) for k in (kept[name] for name in names)])


def _scored(run: MISTables) -> Scored:
    """One model's run as the analysis loop keeps it: its row, its units (the per-item table), the rest."""
    return Scored(run.checkpoints.iloc[0].to_dict(), run.units, {"checkpoints": run.checkpoints, "layers": run.layers,
                                                                 "classes": run.classes, "examples": run.examples})


def _per_checkpoint(units: pd.DataFrame, records: list[dict]) -> list[pd.DataFrame]:
    """The per-unit table split back into each checkpoint's rows (in the records' order)."""
    return [units[units["step"] == r["step"]].reset_index(drop=True) for r in records]


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


def save_tables(out_dir, run: MISTables, controls: MISTables | None = None) -> None:
    """``per_unit.csv`` (every unit of every checkpoint and control), ``plots/mis_layers.csv``, ``plots/mis_classes.csv``."""
    from pathlib import Path

    out_dir = Path(out_dir)
    tables = {"per_unit.csv": "units", "plots/mis_layers.csv": "layers", "plots/mis_classes.csv": "classes"}
    for path, name in tables.items():
        frames = [getattr(r, name) for r in (run, controls) if r is not None and not getattr(r, name).empty]
        if frames:
            storage.write_bytes(out_dir / path, pd.concat(frames, ignore_index=True).to_csv(index=False).encode())


# ----------------------------------------------------------------------------- helpers
def _concat(runs: list[MISTables]) -> MISTables:
    return MISTables(*(pd.concat([getattr(r, f) for r in runs], ignore_index=True)
                    for f in ("checkpoints", "layers", "units", "classes")),
                  examples=[e for r in runs for e in r.examples])


def _split(scores: UnitScores, sizes: list[int]) -> list[UnitScores]:
    """Per-layer slices of the scores of stacked units."""
    bounds = np.cumsum([0] + sizes)
    return [UnitScores(scores.mis[a:b], scores.solved[a:b], scores.constant[a:b], scores.delta[a:b], scores.tasks[a:b])
            for a, b in zip(bounds[:-1], bounds[1:])]


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


