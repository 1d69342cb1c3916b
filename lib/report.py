"""Figures and tables that read only the stages' metrics files (see ``lib.results``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.pipeline import ANALYSES, MIS_OUTPUT_LAYERS, POPULATION_ANALYSES, STAGES
from lib.plots import accuracy_axis, chance_of, colour, legend_below, styled


def sparsity_table(frame: pd.DataFrame, metric: str, index=("arch", "plan")) -> pd.DataFrame:
    """``metric`` per checkpoint, one row per (arch, plan), columns = rounded sparsity (%)."""
    frame = frame.assign(sparsity_pct=(frame["sparsity"] * 100).round(1))
    keys = [k for k in index if k in frame.columns]
    return frame.pivot_table(index=keys, columns="sparsity_pct", values=metric, aggfunc="first")


def sweet_spot(per_image: pd.DataFrame, metric: str, sparsity_by_step: dict, n_resamples: int = 2000, seed: int = 0,
               level: float = 0.95, higher_is_better: bool = True, alpha: float = 0.05) -> dict:
    """The sparsity where ``metric`` is best, tested against dense with the selection kept in the test.

    ``per_image``: one row per (step, image) with columns ``step``, ``image`` and ``metric``; only the
    images with a value at every step are kept (paired). Pivots them into (images, checkpoints), dense
    (step 0) first, and calls :func:`lib.stats.sweet_spot`: its record plus ``metric`` and ``step``.
    ``beats_dense`` there is for this metric alone; :func:`sweet_spot_table` decides over all the report's
    metrics at once.
    """
    from lib import stats

    table = per_image.pivot_table(index="image", columns="step", values=metric, aggfunc="mean").dropna()
    if table.empty or 0 not in table.columns:
        raise ValueError(f"per-image values of {metric!r} need the dense checkpoint (step 0) and common images")
    steps = [0] + sorted(s for s in table.columns if s != 0)
    spot = stats.sweet_spot(table[steps].to_numpy(dtype=float), [sparsity_by_step[s] for s in steps],
                            higher_is_better=higher_is_better, n_resamples=n_resamples, seed=seed, level=level,
                            alpha=alpha)
    return {"metric": metric, "step": int(steps[spot["step_index"]]), **spot}


KEYS = ["arch", "plan", "seed", "step"]
SEED_FOLDER = "seed{}"  # the seed level of every output folder (CONTRACT: data/<stage>/<arch>/<plan>/seed<k>/)


def metric_columns(frame: pd.DataFrame, stage: str) -> list[str]:
    """The columns of ``frame`` that are metrics ``stage`` declares (numeric, not all missing)."""
    declared = STAGES[stage]
    return [c for c in frame.columns if declared.metric(c) is not None
            and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]


def read_matrix(params_file) -> dict | None:
    """The pipeline's matrix as ``params.yaml`` declares it: ``archs``, ``plans``, ``seeds`` (None: a
    params file from before the seed axis, whose outputs have no ``seed<k>`` level; read as seed 0) and
    ``variants`` ({stage: [names]}) and ``population`` (the population analyses, e.g. ``forget``, that
    params.yaml has a section for: the pipeline runs them). An empty or missing ``archs`` / ``plans`` / ``seeds`` is refused: the
    report would read nothing the pipeline ran."""
    if params_file is None:  # no matrix: every output under the root is read (a tree of one's own, the smoke run)
        return None
    from lib.params import read_yaml

    params = read_yaml(params_file, "params file") or {}
    matrix = {}
    for key in ("archs", "plans", "seeds"):
        value = params.get(key)
        if value is None and key == "seeds":
            matrix[key] = None
            continue
        if not isinstance(value, list) or not value:
            raise ValueError(f"{params_file}: `{key}` is {value!r}; the report needs a non-empty list of the "
                             f"{key} the pipeline ran (e.g. `{key}: [{ {'archs': 'cnn', 'plans': 'lrr', 'seeds': 0}[key]}]`)")
        matrix[key] = list(value)
    matrix["variants"] = {stage: sorted(entries or {}) for stage, entries in (params.get("variants") or {}).items()}
    matrix["population"] = [stage for stage in POPULATION_ANALYSES if stage in params]  # run only with its section
    return matrix


def declared_folders(root, matrix: dict) -> dict:
    """(stage, arch, plan, seed) -> the output folder the pipeline writes for it, for the prune stage and every
    analysis; (stage_variant, arch, plan, seed, variant) -> a variant's folder (declared, not read); and
    (stage, arch, plan) -> the folder of a population analysis the matrix runs (``matrix["population"]``)."""
    from pathlib import Path

    seeds = matrix["seeds"] if matrix["seeds"] is not None else [None]
    out = {}
    for stage in ("prune", *ANALYSES):
        for arch in matrix["archs"]:
            for plan in matrix["plans"]:
                for seed in seeds:
                    folder = Path(root, stage, str(arch), str(plan))
                    folder = folder if seed is None else folder / SEED_FOLDER.format(seed)
                    out[(stage, arch, plan, 0 if seed is None else int(seed))] = folder
                    for variant in matrix["variants"].get(stage, []):
                        base = Path(root, f"{stage}_variant", str(arch), str(plan))
                        base = base if seed is None else base / SEED_FOLDER.format(seed)
                        out[(f"{stage}_variant", arch, plan, 0 if seed is None else int(seed), variant)] = base / variant
    for stage in matrix.get("population") or []:
        for arch in matrix["archs"]:
            for plan in matrix["plans"]:
                out[(stage, arch, plan)] = Path(root, stage, str(arch), str(plan))
    return out


def undeclared_outputs(root, matrix: dict) -> list[str]:
    """Every ``metrics.json`` under the stages' folders of ``root`` that no entry of the matrix declares (a copy
    such as ``data/interpret/cnn/backup``, a plan removed from ``params.yaml``, a ``.partial`` run): named by
    the report, never read."""
    if matrix is None:
        return []
    from pathlib import Path

    declared = {folder.resolve() for folder in declared_folders(root, matrix).values()}
    found = []
    for stage in ("prune", *ANALYSES, *(f"{s}_variant" for s in ANALYSES), *POPULATION_ANALYSES):
        for path in sorted(Path(root, stage).glob("**/metrics.json")):
            if path.parent.resolve() not in declared:
                found.append(str(path))
    return found


def load_dimensions(root, matrix: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per checkpoint (arch, plan, seed, step) with every declared metric; and stage -> its columns.

    With ``matrix`` (:func:`read_matrix`), exactly the outputs it declares are read, and a declared output that
    is missing is an error naming it; without, every ``metrics.json`` under ``root`` (a library call on a tree
    of one's own). The dimensions are the metrics the stages declare (``lib.pipeline``); sparsity, test
    accuracy and the control fields (``control``, ``control_of``: CONTRACT) come from the prune stage; an
    analysis that has not run is left out when no matrix is given. ``frame.attrs["folders"]``: (stage, arch,
    plan, seed) -> the folder read ((stage, arch, plan) for a population analysis).

    A population analysis (``forget``: one run over every seed of an (arch, plan)) is merged on (arch, plan,
    step): the same value in every seed's row, since it is a number about the population of networks. It is read
    where the matrix runs it (``matrix["population"]``), or, without a matrix, where it has run.
    """
    from pathlib import Path

    from lib.results import collect, read_stage_metrics

    folders = declared_folders(root, matrix) if matrix is not None else None
    merged, columns, read = None, {}, {}
    for stage in ("prune", *ANALYSES):
        if folders is None:
            frame = collect(root, stage)
        else:
            paths = [(key, folder / "metrics.json") for key, folder in folders.items() if key[0] == stage and len(key) == 4]
            missing = [str(p) for _, p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"the matrix of params.yaml declares {len(missing)} {stage} output(s) that "
                                        f"are missing, e.g. {missing[0]}: run the pipeline (dvc repro) first")
            frame = pd.concat([read_stage_metrics(p).assign(source=str(p), arch=k[1], plan=k[2], seed=k[3])
                               for k, p in paths], ignore_index=True)
        if frame.empty:
            continue
        if "seed" not in frame:
            frame["seed"] = 0
        frame["seed"] = frame["seed"].fillna(0).astype(int)
        for key, source in frame.groupby(["arch", "plan", "seed"])["source"].first().items():
            read[(stage, *key)] = Path(source).parent
        cols = metric_columns(frame, stage)
        extra = ["sparsity", "control", "control_of"] if stage == "prune" else []
        keep = KEYS + extra + cols
        part = frame[[c for c in keep if c in frame.columns]].drop_duplicates(KEYS)
        columns[stage] = cols
        merged = part if merged is None else merged.merge(part, on=KEYS, how="left")
    if merged is None or "sparsity" not in merged:
        raise FileNotFoundError(f"no pruning metrics under {root}/prune: run the pipeline first (dvc repro)")
    for stage in POPULATION_ANALYSES:
        part = _population_rows(root, stage, folders)
        if part is None:
            continue
        cols = metric_columns(part, stage)
        for key, source in part.groupby(["arch", "plan"])["source"].first().items():
            read[(stage, *key)] = Path(source).parent
        columns[stage] = cols
        merged = merged.merge(part[["arch", "plan", "step", *cols]].drop_duplicates(["arch", "plan", "step"]),
                              on=["arch", "plan", "step"], how="left")
    for column in ("control", "control_of"):
        if column not in merged:
            merged[column] = None
    merged = merged.sort_values(KEYS).reset_index(drop=True)
    merged.attrs["folders"] = read
    return merged, columns


def _population_rows(root, stage: str, folders: dict | None) -> pd.DataFrame | None:
    """The rows of a population analysis, keyed (arch, plan, step); None where it has not run (no matrix) or the
    matrix does not run it. A declared output that is missing is an error naming it."""
    from lib.results import collect, read_stage_metrics

    if folders is None:
        frame = collect(root, stage)
        return None if frame.empty else frame
    paths = [(key, folder / "metrics.json") for key, folder in folders.items() if key[0] == stage and len(key) == 3]
    if not paths:
        return None
    missing = [str(p) for _, p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the matrix of params.yaml declares {len(missing)} {stage} output(s) that are "
                                f"missing, e.g. {missing[0]}: run the pipeline (dvc repro) first")
    return pd.concat([read_stage_metrics(p).assign(source=str(p), arch=k[1], plan=k[2]) for k, p in paths],
                     ignore_index=True)


def panels(columns: dict) -> list[tuple[str, str, list[str]]]:
    """(stage, declared metric, its columns) for every declared metric present: one panel each."""
    out = []
    for stage, cols in columns.items():
        for metric in STAGES[stage].metrics:
            present = [c for c in cols if metric.matches(c)]
            if present:
                out.append((stage, metric.name, present))
    return out


def _variant(metric: str, column: str) -> str:
    """What ``*`` stands for in ``column`` (``rma_gradcam`` of ``rma_*``: ``gradcam``); the column otherwise."""
    if "*" not in metric:
        return column
    prefix, suffix = metric.split("*", 1)
    return column[len(prefix):len(column) - len(suffix)]


# Metrics that are accuracies: their panels start at 0 and show chance where the caller knows it.
ACCURACY = ("test_acc", "ood_acc", "ood_acc_all_images")


def chance_levels(root, arch: str) -> dict:
    """Chance levels of the accuracy panels, as the run records them: test accuracy's is 1 / the classes of the
    architecture's trained model (``<root>/train/<arch>/model.pt``); an analysis stage records its own in its
    ``metrics.json`` as ``chance: {metric: level}`` (RQ3's OOD accuracy: 1 / the benchmark's categories). A
    level that no file records is not given (the panel says so)."""
    import json
    from pathlib import Path

    models = sorted(Path(root, "train", arch).glob("**/model.pt"))
    chance = chance_of(models[0]) if models else None
    levels = {} if chance is None else {"test_acc": chance}
    for stage in ANALYSES:
        for path in sorted(Path(root, stage, arch).glob("**/metrics.json")):
            recorded = json.loads(path.read_text()).get("chance") or {}
            levels.update({metric: float(level) for metric, level in recorded.items()})
    return levels


def _control_kind(part: pd.DataFrame, plan: str) -> str | None:
    values = part.loc[part["plan"] == plan, "control"].dropna() if "control" in part else ()
    return values.iloc[0] if len(values) else None


def drawn_sparsity(part: pd.DataFrame, plan: str, steps) -> pd.Series:
    """Where a plan's steps are drawn on the sparsity axis: their own sparsity, except a retrained control's step r
    (dense, sparsity 0), drawn at its pruned plan's step-r sparsity, beside the checkpoint it controls."""
    rows = part[part["plan"] == plan]
    if _control_kind(part, plan) == "retrained":
        rows = part[part["plan"] == rows["control_of"].dropna().iloc[0]]
    return rows.groupby("step")["sparsity"].mean().reindex(steps)


@styled
def plot_dimensions(frame: pd.DataFrame, columns: dict, arch: str, ncols: int = 3, chance: dict | None = None):
    """Small multiples for one architecture: a panel per declared metric against sparsity.

    A metric with variants (``rma_*``: one per attribution) has a line per variant in the variant's
    colour (:func:`lib.plots.colour`, the same as in the stages' own figures); a metric without variants is
    drawn in its plan's colour; one line style per plan. One legend for the figure,
    below the panels; the direction of each metric in its title. Accuracy panels (:data:`ACCURACY`) start at
    0 with chance dashed (``chance``: metric -> chance level; where it is not given the axis label says so).
    """
    import itertools

    layout = panels(columns)
    part = frame[frame["arch"] == arch].sort_values("sparsity")
    plans = sorted(part["plan"].unique())
    styles = dict(zip(plans, itertools.cycle(["-", "--", ":", "-."])))
    ncols = max(1, min(ncols, len(layout)))
    nrows = -(-len(layout) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.0 * nrows), squeeze=False, layout="constrained")
    for ax, (stage, metric, cols) in zip(axes.flat, layout):
        of_dense = STAGES[stage].metric(cols[0]).of_dense
        for plan, group in part.groupby("plan"):
            if of_dense and _control_kind(part, plan) == "random_init":
                continue
            group = group.groupby("step").mean(numeric_only=True)  # the mean over seeds
            x = drawn_sparsity(part, plan, group.index) * 100
            for column in cols:
                if group[column].notna().any():
                    name = _variant(metric, column) if "*" in metric else plan
                    label = name if "*" in metric else f"plan: {plan}"
                    if _control_kind(part, plan) == "random_init":  # one checkpoint: a floor, not a point at 0%
                        ax.axhline(group[column].mean(), color=colour(name), ls=":", lw=1, label=label)
                    else:
                        ax.plot(x, group[column], marker="o", ms=3, color=colour(name), ls=styles[plan], label=label)
        pruned = part[part["sparsity"] > 0]
        if not pruned[[c for c in cols if c in pruned]].notna().any().any():
            ax.text(0.5, 0.5, "no value at any\npruned checkpoint", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")
        better = "higher" if STAGES[stage].metric(cols[0]).higher_is_better else "lower"
        ax.set_title(f"{stage}: {metric}\n({better} is better)")
        ax.set_xlabel("sparsity (%)")
        ax.grid(alpha=0.3)
        if metric in ACCURACY:
            accuracy_axis(ax, (chance or {}).get(metric), label="accuracy")
    for ax in list(axes.flat)[len(layout):]:
        ax.axis("off")
    fig.suptitle(arch)
    extra = [(plt.Line2D([], [], color="0.3", ls=styles[m]), f"plan: {m}") for m in plans] if len(plans) > 1 else []
    legend_below(fig, ncol=5, extra=extra)
    return fig


def item_table(stage: str, path) -> pd.DataFrame:
    """A stage's per-item table with one ``item`` column naming each resampled item (the declared ``item_id``).

    The contract is that column and the declared per-item columns. MIS's table holds more where the stage
    has it, and then it is used as the stage's own ``mis`` uses it: the units of the first similarity
    ``backend`` (the ``mis`` column's), hidden units only (not the ``logits`` / ``softmax`` layers, which the
    stage reports apart), no ``control`` model's units, ``constant`` units left out, a unit named by its
    ``layer`` too (unit numbers repeat across layers). A table without those columns is read as the contract
    alone.
    """
    declared = STAGES[stage]
    items = pd.read_csv(path)
    if stage == "mis":
        if "backend" in items:
            items = items[items["backend"] == items["backend"].iloc[0]]
        if "control" in items:
            items = items[items["control"].isna()]
        if "constant" in items:
            items = items[~items["constant"].astype(bool)]
        if "layer" in items:
            items = items[~items["layer"].isin(MIS_OUTPUT_LAYERS)]
            items = items.assign(unit=items["layer"].astype(str) + ":" + items["unit"].astype(str))
    return items.rename(columns={declared.item_id: "item"})


TOLERANCE = 0.02  # default accuracy guard: a checkpoint may be claimed when its top-1 drop vs dense is at most this

# Metrics of decisions (no per-item mean): tested by a paired swap of the decisions per trial with one network
# (lib.stats.swap_sweet_spot), by the seed-level t test with several. Error consistency with the dense model is
# 1 at dense by definition, so no checkpoint can beat dense on it: it is shown, never tested.
DECISION_METRICS = ("shape_bias", "ec_humans")
HUMAN_TRIALS = "human_trials.csv"  # the align stage's observer trials (lib.align.metrics.HUMAN_TRIALS: subj, dataset,
#                                    condition, image_id, category, object_response), where the stimuli have observers
NOT_COMPARABLE = {"ec_dense": "consistency with the dense model is 1 at dense by definition: no checkpoint can beat "
                              "dense on it (shown, outside the family)"}


def controls(frame: pd.DataFrame, arch: str, plan: str) -> dict:
    """The control plans of (``arch``, ``plan``) in the run (CONTRACT: the prune metrics' ``control`` and
    ``control_of``): ``{"retrained": plan or None, "random_init": plan or None}``."""
    part = frame[frame["arch"] == arch].drop_duplicates("plan")
    retrained = part[(part["control"] == "retrained") & (part["control_of"] == plan)]["plan"].tolist()
    random = part[part["control"] == "random_init"]["plan"].tolist()
    return {"retrained": retrained[0] if retrained else None, "random_init": random[0] if random else None}


def is_control(frame: pd.DataFrame, plan: str) -> bool:
    values = frame.loc[frame["plan"] == plan, "control"].dropna()
    return bool(len(values)) and values.iloc[0] is not None


def accuracy_guard(part: pd.DataFrame, steps: list[int], tolerance: float) -> dict:
    """Per step of one (arch, plan): ``test_acc`` (mean over seeds), ``drop`` (the largest over seeds of the
    seed's dense top-1 minus the step's) and ``claimable`` (drop <= ``tolerance`` in every network)."""
    acc = part.pivot_table(index="seed", columns="step", values="test_acc", aggfunc="first")
    out = {}
    for step in steps:
        drop = float((acc[0] - acc[step]).max()) if step in acc and 0 in acc else float("nan")
        out[step] = {"test_acc": float(acc[step].mean()) if step in acc else float("nan"), "drop": drop,
                     "claimable": bool(step != 0 and drop <= tolerance + 1e-12)}
    return out


def _item_values(folders: dict, stage: str, arch: str, plan: str, seeds: list[int], item: str, steps: list[int]):
    """(seeds, items, steps) per-item values of ``item`` at ``steps``, the items common to every seed; None when
    a seed has no per-item table."""
    declared = STAGES[stage]
    tables = []
    for seed in seeds:
        folder = folders.get((stage, arch, plan, seed))
        if folder is None or not (folder / declared.items).is_file():
            return None
        items = item_table(stage, folder / declared.items)
        if item not in items:
            return None
        tables.append(items.pivot_table(index="item", columns="step", values=item, aggfunc="mean").reindex(columns=steps))
    common = tables[0].index
    for table in tables[1:]:
        common = common.intersection(table.index)
    return np.stack([t.loc[common].to_numpy(dtype=float) for t in tables])


def _decision_values(folders: dict, arch: str, plan: str, seed: int, metric: str, steps: list[int]):
    """(decision codes (trials, steps), statistic) of a decision metric of one network, or a reason string."""
    from lib import stats

    folder = folders.get(("align", arch, plan, seed))
    path = None if folder is None else folder / STAGES["align"].items
    if path is None or not path.is_file():
        return "no per-trial table"
    trials = pd.read_csv(path)
    needed = {"trial", "step", "object_response", "category"} | ({"texture", "dataset"} if metric == "shape_bias" else set())
    if not needed <= set(trials.columns):
        return f"the per-trial table lacks {sorted(needed - set(trials.columns))}"
    if metric == "shape_bias":
        trials = trials[trials["dataset"] == "cue-conflict"]
        if trials.empty:
            return "no cue-conflict trials"
    else:
        humans = folder / HUMAN_TRIALS
        if not humans.is_file():
            return f"the align stage wrote no human observer trials ({HUMAN_TRIALS}) to compare decisions with"
        humans = pd.read_csv(humans, dtype=str, keep_default_na=False)  # as written: the trial keys must match
        missing = sorted({"subj", "dataset", "condition", "image_id", "category", "object_response"} - set(humans))
        if missing:
            return f"{HUMAN_TRIALS} lacks {missing}"
    codes = {name: i for i, name in enumerate(sorted(set(trials["object_response"].astype(str))
                                                     | set(trials["category"].astype(str))
                                                     | set(trials.get("texture", pd.Series(dtype=str)).dropna().astype(str))))}
    wide = trials.pivot_table(index="trial", columns="step", values="object_response", aggfunc="first").reindex(columns=steps).dropna()
    first = trials.drop_duplicates("trial").set_index("trial").loc[wide.index]
    decisions = wide.map(lambda v: codes[str(v)]).to_numpy(dtype=float)
    category = first["category"].astype(str).map(codes).to_numpy(dtype=float)
    if metric == "shape_bias":
        texture = first["texture"].astype(str).map(lambda v: codes.get(v, -1)).to_numpy(dtype=float)
        return decisions, lambda rows: stats.shape_bias(rows, category, texture)
    # ec_humans as the align stage aggregates it: per (dataset, condition) the mean over observers of the kappa of
    # trial-wise correctness on the trials both saw, per dataset the mean over its conditions, then over datasets
    humans = humans.assign(trial=humans["dataset"] + "/" + humans["condition"] + "/" + humans["image_id"])
    groups = {}
    for (dataset, condition, _), own in humans.groupby(["dataset", "condition", "subj"], sort=True):
        own = own.drop_duplicates("trial").set_index("trial")
        index = np.flatnonzero(first.index.isin(own.index))
        if len(index):
            seen = own.loc[first.index[index]]
            correct = (seen["object_response"] == seen["category"]).to_numpy()
            groups.setdefault(dataset, {}).setdefault(condition, []).append((index, correct))
    if not groups:
        return "no human trial matches the model's trials"

    def ec_humans(rows):
        rows = np.atleast_2d(rows)

        def over_observers(observers):
            return np.mean([stats.kappa(rows[:, i] == category[i], correct) for i, correct in observers], axis=0)

        return np.mean([np.mean([over_observers(observers) for observers in conditions.values()], axis=0)
                        for conditions in groups.values()], axis=0)

    return decisions, ec_humans


def _interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean of ``values`` (NaN bounds with fewer than 2)."""
    from scipy import stats as sps

    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(sps.t.isf((1 - level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


SANITY_FAILED = "; its maps fail the randomisation sanity check: read as the image, not the network"
# A retrained control whose score is undefined (NaN: e.g. an all-zero map's RMA) at one of its checkpoints for every
# item cannot be paired with the pruned run: the test against dense stands, the control comparison is not made.
CONTROL_UNDEFINED = "; not compared with its retrained control: the control's score is undefined at one of its checkpoints"


def sanity_verdicts(folders: dict) -> dict:
    """Per attribution, RQ1's randomisation sanity check (``lib.interpret.sanity``: the top-level ``sanity`` of
    interpret's ``metrics.json``) over every interpret output the report reads: ``max_rank_correlation`` (the
    largest), ``threshold`` (the strictest) and ``passed`` (in every one of them)."""
    import json

    out = {}
    for key, folder in sorted(folders.items(), key=lambda kv: str(kv[0])):
        path = folder / "metrics.json"
        if key[0] != "interpret" or not path.is_file():
            continue
        for name, check in (json.loads(path.read_text()).get("sanity") or {}).items():
            seen = out.setdefault(name, {"max_rank_correlation": -np.inf, "threshold": np.inf, "passed": True})
            seen["max_rank_correlation"] = max(seen["max_rank_correlation"], float(check["max_rank_correlation"]))
            seen["threshold"] = min(seen["threshold"], float(check["threshold"]))
            seen["passed"] = seen["passed"] and bool(check["passed"])
    return out


def sanity_mark(sanity: dict, stage: str, column: str) -> dict:
    """``{"sanity": text}`` for a per-attribution score of RQ1 (``rma_gradcam``...) whose attribution was checked
    (:func:`sanity_verdicts`); ``{}`` otherwise (the check's own ``sanity_*`` columns included)."""
    metric = STAGES[stage].metric(column)
    if stage != "interpret" or "*" not in metric.name or metric.name.startswith("sanity_"):
        return {}
    check = sanity.get(_variant(metric.name, column))
    if check is None:
        return {}
    if check["passed"]:
        return {"sanity": f"passes (max {check['max_rank_correlation']:.3g})"}
    return {"sanity": f"fails: rank correlation {check['max_rank_correlation']:.3g} >= {check['threshold']:.3g} "
                      f"with random weights"}


def family_table(root, frame: pd.DataFrame, columns: dict, n_resamples: int = 2000, seed: int = 0,
                 alpha: float = 0.05, correction: str = "holm", tolerance: float = TOLERANCE,
                 level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sweet spots, points): every declared metric of every ordinary plan tested, and the values drawn.

    Per (arch, plan) that is no control: the checkpoints within ``tolerance`` of dense's top-1 in every seed
    are claimable (:func:`accuracy_guard`); per tested metric, ``lib.stats.sweet_spot`` on the per-item values
    of every seed (one seed: items are the unit; several: networks are), against dense and against the plan's
    dense-retrained control where the run has one; decision metrics (:data:`DECISION_METRICS`) by the swap test
    (one seed) or from their per-network values (several). Across the whole report ``lib.stats.claim`` (Holm or
    BH at ``alpha``). Metrics not tested say why. ``points``: one row per (arch, plan, metric, step) of every
    plan, controls included: the mean over items and seeds and its ``level`` interval (over items with one
    seed, over networks with several), sparsity, claimable.
    """
    from lib import stats

    folders = frame.attrs.get("folders", {})
    sanity = sanity_verdicts(folders)
    rows, points = [], []
    for (arch, plan), part in frame.groupby(["arch", "plan"], sort=True):
        seeds = sorted(part["seed"].unique())
        steps = sorted(part["step"].unique())
        sparsity = part.groupby("step")["sparsity"].mean().to_dict()
        guard = accuracy_guard(part, steps, tolerance)
        control = controls(frame, arch, plan)
        ordinary = not is_control(frame, plan)
        claimable = [guard[s]["claimable"] for s in steps]
        for stage in (*ANALYSES, *POPULATION_ANALYSES):
            for column in columns.get(stage, []):
                metric = STAGES[stage].metric(column)
                base = {"arch": arch, "plan": plan, "stage": stage, "metric": column, "seeds": len(seeds),
                        "higher_is_better": metric.higher_is_better, **sanity_mark(sanity, stage, column)}
                item = metric.item_column(column)
                values = None if item is None else _item_values(folders, stage, arch, plan, seeds, item, steps)
                if values is None and column in part:
                    values = part.pivot_table(index="seed", columns="step", values=column,
                                              aggfunc="first").reindex(index=seeds, columns=steps).to_numpy()[:, None, :]
                    values = values if column in DECISION_METRICS or item is None else None
                for j, step in enumerate(steps):
                    if values is not None:
                        per = values[:, :, j]
                        unit = per.mean(1) if len(seeds) > 1 else per[0]
                        mean, low, high = _interval(unit, level)
                    else:
                        mean, low, high = float(part.loc[part["step"] == step, column].mean()), float("nan"), float("nan")
                    points.append({"arch": arch, "plan": plan, "stage": stage, "metric": column, "step": int(step),
                                   "sparsity": sparsity[step], "value": mean, "low": low, "high": high,
                                   "claimable": guard[step]["claimable"] or step == 0,
                                   "test_acc": guard[step]["test_acc"], "accuracy_drop": guard[step]["drop"]})
                if not ordinary:
                    continue
                if stage in POPULATION_ANALYSES:
                    rows.append({**base, "verdict": f"not tested: {metric.why_untested}"})
                    continue
                if column in NOT_COMPARABLE:
                    rows.append({**base, "verdict": f"not tested: {NOT_COMPARABLE[column]}"})
                    continue
                if not metric.tested:
                    rows.append({**base, "verdict": "not tested: a secondary score (shown, outside the family)"})
                    continue
                reference = None
                spot = None
                if column in DECISION_METRICS and len(seeds) == 1:
                    got = _decision_values(folders, arch, plan, seeds[0], column, steps)
                    if isinstance(got, str):
                        rows.append({**base, "verdict": f"not tested: {got}"})
                        continue
                    decisions, statistic = got
                    if control["retrained"] is not None:
                        ref = _decision_values(folders, arch, control["retrained"], seeds[0], column, steps)
                        reference = None if isinstance(ref, str) or ref[0].shape != decisions.shape else ref[0]
                    spot = stats.swap_sweet_spot(decisions, statistic, [sparsity[s] for s in steps],
                                                 higher_is_better=metric.higher_is_better, n_resamples=n_resamples,
                                                 seed=seed, alpha=alpha, claimable=claimable, reference=reference)
                elif values is None or (item is None and column not in DECISION_METRICS):
                    why = metric.why_untested or "no per-item values"
                    rows.append({**base, "verdict": f"not tested: {why}"})
                    continue
                else:
                    if np.isnan(values[:, :, 0]).all():
                        rows.append({**base, "verdict": "not tested: undefined on the dense model"})
                        continue
                    defined = [j for j in range(len(steps)) if not np.isnan(values[:, :, j]).all()]
                    if control["retrained"] is not None:
                        if item is not None:
                            reference = _item_values(folders, stage, arch, control["retrained"], seeds, item, steps)
                        else:
                            ref_part = frame[(frame["arch"] == arch) & (frame["plan"] == control["retrained"])]
                            reference = ref_part.pivot_table(index="seed", columns="step", values=column, aggfunc="first"
                                                             ).reindex(index=seeds, columns=steps).to_numpy()[:, None, :]
                        if reference is not None and reference.shape != values.shape:
                            reference = None  # different items or steps: no paired comparison
                        elif reference is not None and not _paired_items(values[:, :, defined],
                                                                         reference[:, :, defined]):
                            reference, base = None, {**base, "control_note": CONTROL_UNDEFINED}
                    spot = stats.sweet_spot(values[:, :, defined], [sparsity[steps[j]] for j in defined],
                                            higher_is_better=metric.higher_is_better, n_resamples=n_resamples,
                                            seed=seed, level=level, alpha=alpha,
                                            claimable=[claimable[j] for j in defined],
                                            reference=None if reference is None else reference[:, :, defined])
                    spot["step_index"] = defined[spot["step_index"]]
                step = steps[spot["step_index"]]
                floor = None
                if control["random_init"] is not None and column in frame:
                    floor = frame.loc[(frame["arch"] == arch) & (frame["plan"] == control["random_init"]), column].mean()
                rows.append({**base, **spot, "seeds": len(seeds), "step": int(step),
                             "test_acc": guard[step]["test_acc"], "accuracy_drop": guard[step]["drop"],
                             "tolerance": float(tolerance), "retrained_control": control["retrained"],
                             "random_init": None if floor is None or pd.isna(floor) else float(floor),
                             "resampled": "trial" if spot["unit"] == "trial" else STAGES[stage].item_id})
    stats.claim([r for r in rows if "p_value" in r], alpha=alpha, method=correction)  # one family: the report
    for row in rows:
        if row.get("sanity", "").startswith("fails"):
            row["verdict"] += SANITY_FAILED
        if "control_note" in row:
            row["verdict"] = row["verdict"].replace("; no retrained control in the run", "") + row.pop("control_note")
    return pd.DataFrame(rows), pd.DataFrame(points)



def _paired_items(values: np.ndarray, reference: np.ndarray) -> bool:
    """Whether some item has a value at every checkpoint of every seed in both (seeds, items, checkpoints) arrays."""
    return bool((~np.isnan(values).any((0, 2)) & ~np.isnan(reference).any((0, 2))).any())


def sweet_spot_table(root, frame: pd.DataFrame, columns: dict, n_resamples: int = 2000, seed: int = 0,
                     alpha: float = 0.05, correction: str = "holm", tolerance: float = TOLERANCE) -> pd.DataFrame:
    """The sweet spots of :func:`family_table` alone."""
    return family_table(root, frame, columns, n_resamples, seed, alpha, correction, tolerance)[0]


SHOWN = ["arch", "params", "plan", "metric", "seeds", "dense", "value", "sparsity", "test_acc", "accuracy_drop", "gain",
         "gain_interval", "sparsity_interval", "control", "random_init", "p_value", "p_adjusted",
         "p_adjusted_control", "p_every_network", "detectable_gain", "sanity", "verdict"]


def readable(spots: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The sweet-spot table as a reader sees it: the :data:`SHOWN` columns present, numbers rounded to
    ``digits``, intervals as ``[low, high]`` strings rounded alike, p-values to two significant digits."""
    def interval(value):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return ""
        return "[" + ", ".join("nan" if pd.isna(v) else f"{v:.{digits}g}" if abs(v) >= 10 ** digits
                               else f"{round(v, digits):g}" for v in value) + "]"

    table = spots[[c for c in SHOWN if c in spots.columns]].copy()
    for column in ("gain_interval", "sparsity_interval"):
        if column in table:
            table[column] = table[column].map(interval)
    for column in [c for c in table.columns if c.startswith("p_")]:  # small p-values keep their digits: 0.0012
        table[column] = table[column].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.2g}")
    return table.round(digits)


def show(table: pd.DataFrame):
    """Display ``table`` whole in a notebook: no column clipped (pandas cuts cells at 50 characters by default),
    text left-aligned and wrapped."""
    from IPython.display import display

    with pd.option_context("display.max_colwidth", None, "display.max_columns", None, "display.width", None):
        styled = table.style.format(precision=3, na_rep="").hide(axis="index").set_properties(
            **{"text-align": "left", "white-space": "pre-wrap"})
        display(styled)


@styled
def plot_claims(points: pd.DataFrame, spots: pd.DataFrame, arch: str, tolerance: float = TOLERANCE, ncols: int = 3):
    """The answer for one architecture: a panel per (plan, tested metric). Each checkpoint's mean with its
    interval (over items with one network, over networks with several), dense as a solid line, the
    dense-retrained control's values as a dashed curve and the random_init control as a dotted floor; the
    sparsities outside the accuracy guard shaded (drawn, never claimed); a claimed sweet spot starred with its
    adjusted p, an unclaimed best checkpoint ringed."""
    tested = spots[(spots["arch"] == arch) & spots.get("p_value", pd.Series(dtype=float)).notna()] if len(spots) else spots
    layout = [(r["plan"], r["metric"], r) for _, r in tested.iterrows()] if len(tested) else []
    ncols = max(1, min(ncols, len(layout) or 1))
    nrows = max(1, -(-len(layout) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, 3.2 * nrows), squeeze=False, layout="constrained")
    for ax, (plan, metric, spot) in zip(axes.flat, layout):
        mine = points[(points["arch"] == arch) & (points["plan"] == plan) & (points["metric"] == metric)].sort_values("step")
        x = mine["sparsity"].to_numpy() * 100
        out = ~mine["claimable"].to_numpy(dtype=bool)
        edges = np.concatenate([[x[0]], (x[1:] + x[:-1]) / 2, [x[-1]]]) if len(x) else []
        for j in np.flatnonzero(out):
            ax.axvspan(edges[j], edges[j + 1], color="0.85", zorder=0,
                       label=f"top-1 drop > {tolerance:g} (not claimed)")
        yerr = np.vstack([mine["value"] - mine["low"], mine["high"] - mine["value"]])
        ax.errorbar(x, mine["value"], yerr=np.nan_to_num(yerr), color=colour(plan), marker="o", ms=3, capsize=2,
                    label=f"{plan}: mean, 95% interval")
        ax.axhline(spot["dense"], color="0.2", lw=1, label="dense")
        retrained = spot.get("retrained_control")
        if isinstance(retrained, str):
            ref = points[(points["arch"] == arch) & (points["plan"] == retrained) & (points["metric"] == metric)].sort_values("step")
            at = dict(zip(mine["step"], mine["sparsity"] * 100))  # the control of step r: drawn at step r's sparsity
            ref = ref[ref["step"].isin(at)]
            ax.plot(ref["step"].map(at), ref["value"], color="0.4", ls="--", marker=".", label="retrained control (same step)")
        floor = spot.get("random_init")
        if floor is not None and not pd.isna(floor):
            ax.axhline(floor, color="0.5", ls=":", lw=1.2, label="random_init control")
        if spot["step_index"] != 0:
            sx, sy = spot["sparsity"] * 100, spot["value"]
            if spot.get("beats_dense"):
                ax.plot(sx, sy, marker="*", ms=14, color="crimson", ls="none", label="claimed sweet spot", zorder=5)
                ax.annotate(f"p_adj {spot['p_adjusted']:.2g}", (sx, sy), xytext=(4, 6), textcoords="offset points",
                            fontsize=9, color="crimson")
            else:
                ax.plot(sx, sy, marker="o", ms=10, mfc="none", color="0.3", ls="none",
                        label="best claimable (not claimed)")
                ax.annotate(f"p_adj {spot['p_adjusted']:.2g}", (sx, sy), xytext=(4, 6), textcoords="offset points",
                            fontsize=9, color="0.3")
        better = "higher" if spot["higher_is_better"] else "lower"
        ax.set_title(f"{plan}: {metric}\n({better} is better)")
        ax.set_xlabel("sparsity (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(layout):]:
        ax.axis("off")
    fig.suptitle(f"{arch}: sweet spots tested (intervals over {'networks' if len(tested) and tested['seeds'].max() > 1 else 'items'})")
    legend_below(fig, ncol=4)
    return fig


def dimension_correlations(frame: pd.DataFrame, metrics: list[str], method: str = "spearman") -> pd.DataFrame:
    """Rank correlation between dimensions across checkpoints (one row of ``frame`` per checkpoint)."""
    present = [m for m in metrics if m in frame.columns and frame[m].notna().sum() > 2]
    return frame[present].corr(method=method)


def parameter_counts(root) -> dict:
    """Parameters of each architecture's dense model, from the train stage's metrics."""
    from pathlib import Path

    from lib import storage

    counts = {}
    for path in sorted(Path(root, "train").glob("**/metrics.json"), reverse=True):  # seed0 last: it wins
        arch = path.relative_to(Path(root, "train")).parts[0]
        counts[arch] = storage.load_json(path).get("params")
    return counts
