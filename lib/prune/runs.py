"""The prune notebook's driver: data, dense models, one run or a grid of runs, and their tables.

One run (the default pipeline's stage) prunes the dense model trained in ``train_dir`` with one
plan and writes into ``out_dir`` itself. A grid (the presets) prunes several dense models
(``models``: arch -> a pretrained model or a checkpoint) with several plans (``plans``: name ->
plan), each into ``out_dir/<arch>/<name>``, and writes a summary of all of them in ``out_dir``.

``dataset`` picks the data (``lib.data.datasets``; default: the embedded dataset in ``data_dir``); a
dense model is a checkpoint ``{"checkpoint": path}`` or a pretrained source (``lib.models.pretrained``).

:func:`configure` checks and parses the notebook's parameters once, into the :class:`PruneRun` that :func:`prune`
runs; the stage's check (:func:`check_stage`) is the same call before the notebook starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import storage
from lib.data.datasets import check_dataset, check_training_data, classification_data
from lib.models import check_pretrained, get_spec, load_pretrained, save_checkpoint
from lib.prune.schedules import CONTROLS, PruningPlan, lineage, run_random_init, run_schedule
from lib.train import Recipe, evaluate, with_seed

def check_control(control: str | None, control_of: str | None, recipe: Recipe, grid: bool = False) -> None:
    """A prune stage's ``control`` (None: a pruned plan; ``retrained``: ``control_of``'s schedule with nothing
    pruned; ``random_init``): raises ValueError naming the parameter, the problem and the fix."""
    if control is None:
        if control_of is not None:
            raise ValueError(f"control_of {control_of!r} is given without control: set control: retrained "
                             "(the dense-retrained control of that plan) or remove control_of")
        return
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; choose one of {', '.join(CONTROLS)} (or none: a pruned plan)")
    if grid:
        raise ValueError(f"control {control!r} runs in a pipeline stage's single run, not in a grid of models/plans; "
                         "declare it as a plan of params.yaml's `prune:`")
    if control == "retrained":
        if not control_of:
            raise ValueError("control: retrained needs control_of, the name of the pruned plan whose schedule it "
                             "follows (e.g. control_of: lrr)")
        if recipe.epochs == 0:
            raise ValueError("control: retrained with a recipe of 0 epochs retrains nothing: every checkpoint would "
                             "be the dense model; use control: random_init, or drop the control")
    elif control_of is not None:
        raise ValueError(f"control: random_init is the control of no plan; remove control_of {control_of!r}")


def check_controls(params: dict, source: str = "params.yaml") -> None:
    """The controls among ``params``' plans (``prune.<name>.control``), checked against the other plans:
    a retrained control follows a pruned plan of ``prune:`` with that plan's own schedule, and the plan it
    controls runs beside it (``plans``); a random_init control prunes nothing (no ``plan``)."""
    prune, plans = params.get("prune") or {}, params.get("plans") or []
    for name, entry in prune.items():
        entry = entry or {}
        control, of = entry.get("control"), entry.get("control_of")
        where = f"{source}: prune.{name}"
        try:
            check_control(control, of, Recipe(epochs=1))  # the recipe (per arch) is the stage's check
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if control == "random_init" and "plan" in entry:
            raise ValueError(f"{where}: a random_init control prunes nothing; remove its `plan`")
        if control != "retrained":
            continue
        if of not in prune:
            raise ValueError(f"{where}.control_of names {of!r}, which is no plan of `prune:` ({sorted(prune)}); "
                             "name the pruned plan it controls")
        if (prune[of] or {}).get("control"):
            raise ValueError(f"{where}.control_of names {of!r}, itself a control; name a pruned plan")
        if entry.get("plan") != (prune[of] or {}).get("plan"):
            raise ValueError(f"{where}.plan differs from prune.{of}.plan: a retrained control follows its plan's "
                             f"schedule exactly; write `plan: *{of}` with an anchor `plan: &{of} {{...}}` on "
                             f"prune.{of}.plan")
        if name in plans and of not in plans:
            raise ValueError(f"{source}: `plans` lists {name}, the control of {of}, without {of}; add {of} to plans")


@dataclass(frozen=True)
class PruneRun:
    """A prune stage's run with every parameter checked and parsed (:func:`configure`): what notebook 02 runs.

    ``plans``: name -> :class:`PruningPlan` (the stage's one plan, ``plan_name``; a grid's several), each with the
    run's seed and ``plan_overrides`` applied; ``recipe``: the retraining :class:`Recipe` with the run's seed;
    ``models``: arch -> dense model source (a pipeline stage: the checkpoint its train stage wrote in ``train_dir``);
    ``dataset``: the data (the embedded dataset in ``data_dir`` unless given)."""

    arch: str
    plan_name: str
    train_dir: str
    out_dir: str
    plans: dict
    recipe: Recipe
    dataset: dict
    models: dict
    grid: bool
    seed: int = 0
    control: str | None = None
    control_of: str | None = None


def configure(arch: str, plan_name: str, train_dir: str, plan: dict, recipe: dict, out_dir: str, data_dir: str,
              dataset: dict | None = None, models: dict | None = None, plans: dict | None = None,
              plan_overrides: dict | None = None, seed: int = 0, control: str | None = None,
              control_of: str | None = None, exists: bool = True) -> PruneRun:
    """The prune stage's one check and parse, before any compute: the parameters of notebook 02 (see
    :func:`run_pruning`) as a :class:`PruneRun`. :func:`check_stage` calls it with ``exists`` False (before the
    notebook starts: input files are listed for the runner, not opened); the notebook calls it with ``exists``
    True (every file there, the dense checkpoint of the stage's ``arch`` and ``seed``) and runs what it returns."""
    grid = bool(models or plans)
    models = dict(models or {arch: {"checkpoint": f"{train_dir}/model.pt"}})
    dataset = dict(dataset or {"name": "shapes"})
    if dataset.get("name", "shapes") == "shapes":
        dataset.setdefault("root", data_dir)
    check_dataset(dataset, exists=exists)
    for model_arch, source in models.items():
        if "checkpoint" not in source:
            check_pretrained(source, exists=exists, what=f"model {model_arch!r}")
        elif set(source) != {"checkpoint"}:
            raise ValueError(f"model {model_arch!r}: a checkpoint source takes only 'checkpoint'")
        elif exists and not Path(source["checkpoint"]).is_file():
            raise FileNotFoundError(f"model {model_arch!r}: {source['checkpoint']} does not exist; train it first "
                                    "(dvc repro train, or notebooks/01_train.ipynb)")
    parsed = {name: PruningPlan.from_dict(with_seed({**p, **(plan_overrides or {})}, seed, "plan"))
              for name, p in (plans or {plan_name: plan}).items()}
    parsed_recipe = Recipe.from_dict(with_seed(recipe, seed, "recipe"))
    check_control(control, control_of, parsed_recipe, grid)
    check_training_data(dataset, parsed_recipe.epochs, "the retraining dataset")
    if exists and not grid:  # the stage's arch and seed against the checkpoint's (not labelled silently)
        from lib.models.registry import check_arch

        check_arch(models[arch]["checkpoint"], arch=arch)
        trained = (storage.load_torch(models[arch]["checkpoint"])["meta"].get("recipe") or {}).get("seed", seed)
        if trained != seed:
            raise ValueError(f"train_dir {train_dir} holds the network of seed {trained}, but this run's seed is "
                             f"{seed}; point train_dir at data/train/{arch}/seed{seed}")
    return PruneRun(arch, plan_name, train_dir, out_dir, parsed, parsed_recipe, dataset, models, grid, seed, control,
                    control_of)


def check_stage(p: dict) -> list[tuple]:
    """The prune stage's parameters, checked before any compute (:func:`configure`); returns the input paths it
    reads that no upstream stage writes: a grid's dense models and a dataset other than the embedded one."""
    from lib.data.datasets import dataset_paths

    # arch, plan_name and the folders only name things here (the runner gives them; a test's check may not)
    run = configure(p.get("arch"), p.get("plan_name"), p.get("train_dir"), p["plan"], p["recipe"], p.get("out_dir"),
                    p.get("data_dir"), p["dataset"], p["models"], p["plans"], p["plan_overrides"], p["seed"], p["control"],
                    p["control_of"], exists=False)
    needed = []
    for arch, source in (run.models if run.grid else {}).items():
        if "checkpoint" in source:
            needed.append((f"models.{arch}.checkpoint", source["checkpoint"], "weights"))
        elif source.get("weights"):
            needed.append((f"models.{arch}.weights", source["weights"], "weights"))
    if p["dataset"]:
        needed += dataset_paths(run.dataset)
    return needed


def dense_checkpoint(arch: str, source: dict, out_dir: str | Path) -> Path:
    """Path of the dense model's checkpoint; a pretrained model is first written to ``out_dir/<arch>/dense.pt``."""
    if "checkpoint" in source:
        return Path(source["checkpoint"])
    path = Path(out_dir) / arch / "dense.pt"
    kwargs = dict(source.get("model_kwargs", {}))
    model = load_pretrained(source)
    save_checkpoint(path, model, source["model"], source.get("num_classes", 1000), kwargs,
                    weights=str(source.get("weights")), recorded_acc=source.get("recorded_acc"))
    return path


def summary_row(record: dict, arch: str, plan_name: str, plan: PruningPlan | None) -> dict:
    """One flat row per checkpoint: the metrics contract's step/sparsity/test_acc plus the accounting
    (``plan`` None: the random-initialisation control, which follows no plan)."""
    acct = record["accounting"]
    row = {"arch": arch, "plan": plan_name, **{k: getattr(plan, k, None) for k in ("pruner", "schedule", "selection",
                                                                                 "scope")},
           **{k: record[k] for k in ("step", "parent", "target", "sparsity", "test_acc", "val_acc")},
           # absent in manifests written before they were recorded
           "pruned_acc": record.get("pruned_acc"), "retrain_epochs": record.get("retrain_epochs")}
    for key in ("params", "zeros", "prunable_params", "prunable_zeros", "macs", "nonzero_macs",
                "compacted_params", "compacted_macs", "removed_share"):
        row[key] = acct.get(key)
    row["zero_share"] = acct["zeros"] / acct["params"]
    row["compacted_macs_ratio"] = None if acct.get("compacted_macs") is None else acct["compacted_macs"] / acct["macs"]
    return row


def run_pruning(arch: str, plan_name: str, train_dir: str, plan: dict, recipe: dict, out_dir: str, data_dir: str,
                dataset: dict | None = None, models: dict | None = None, plans: dict | None = None,
                plan_overrides: dict | None = None, progress: bool = True, seed: int = 0,
                control: str | None = None, control_of: str | None = None) -> dict:
    """Run one pruning schedule, or a grid of them (see the module docstring): :func:`configure`, then :func:`prune`.

    ``plan_overrides``: fields that replace the plan's for this architecture (the pipeline's plans belong to
    plans, shared by every architecture; e.g. Study A prunes ResNets further: ``{"threshold": 0.997}``).
    ``seed``: the run's seed (retraining and random selection; the dense model's came from its train stage).
    ``control``: ``retrained`` (``plan`` with nothing pruned, the control of plan ``control_of``) or
    ``random_init`` (one freshly initialised network of the architecture; ``plan`` unused), see
    ``lib.prune.schedules``.
    """
    return prune(configure(arch, plan_name, train_dir, plan, recipe, out_dir, data_dir, dataset, models, plans,
                           plan_overrides, seed, control, control_of), progress)


def prune(run: PruneRun, progress: bool = True) -> dict:
    """Run a checked :class:`PruneRun`: its dense models, each pruned with each plan into ``run.out_dir`` (a grid:
    ``run.out_dir/<arch>/<plan>``).

    Returns ``{"rows": [...], "dense": {arch: {...}}, "records": {(arch, name): [...]}, "grid": bool}`` and the
    run's lineage (seed, control, control_of).
    """
    plan_name, out_dir, seed, control, control_of = run.plan_name, run.out_dir, run.seed, run.control, run.control_of
    rows, dense, records, cache = [], {}, {}, {}
    for model_arch, source in run.models.items():
        checkpoint = dense_checkpoint(model_arch, source, out_dir)
        payload = storage.load_torch(checkpoint)
        model_info, recorded_acc = payload["model"], source.get("recorded_acc", payload["meta"].get("recorded_acc"))
        spec = get_spec(model_info["name"])
        key = (spec.mean, spec.std)
        if key not in cache:
            cache = {key: classification_data(run.dataset, spec.mean, spec.std)}  # one normalisation in memory at a time
        data = cache[key]
        dense[model_arch] = dense_scores(checkpoint, data, recorded_acc)
        if control == "random_init":
            records[(model_arch, plan_name)] = recs = run_random_init(checkpoint, seed, data, out_dir)
            rows += [summary_row(r, model_arch, plan_name, None) for r in recs]
            continue
        dense_accounting = {}  # the same for every plan that prunes the same layers
        for name, pruning_plan in run.plans.items():
            run_dir = Path(out_dir) / model_arch / name if run.grid else Path(out_dir)
            layers = pruning_plan.layer_set()
            recs = run_schedule(checkpoint, pruning_plan, run.recipe, data, run_dir, progress=progress,
                                dense_eval={**dense[model_arch], "accounting": dense_accounting.get(layers)},
                                control=control, control_of=control_of)
            dense_accounting[layers] = recs[0]["accounting"]
            records[(model_arch, name)] = recs
            rows += [summary_row(r, model_arch, name, pruning_plan) for r in recs]
    return {"rows": rows, "dense": dense, "records": records, "grid": run.grid,
            **lineage(seed, control, control_of)}


def dense_scores(checkpoint: Path, data: dict, recorded_acc: float | None = None) -> dict:
    """The dense model's accuracy on each split (``full_acc``: on every image of the split, if given)."""
    from lib.models import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    scores = {"test_acc": evaluate(model, data["test"]), "val_acc": evaluate(model, data["val"])}
    if "full" in data:
        scores["full_acc"] = evaluate(model, data["full"])
    if recorded_acc is not None:
        scores["recorded_acc"] = recorded_acc
    return scores


def accuracy_table(frame: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """``metric`` per (arch, plan) and target sparsity (%, columns); 0 is the dense model."""
    frame = frame.assign(target_pct=(frame["target"] * 100).round(1))
    return frame.pivot_table(index=["arch", "plan"], columns="target_pct", values=metric, aggfunc="first")


def save_results(out_dir: str | Path, results: dict, arch: str, plan_name: str, chance: dict | None = None) -> Path:
    """Metrics files: a run's ``metrics.json`` (the stage contract) in every run directory; for a grid,
    also ``out_dir/metrics.json`` with the dense accuracies and the accuracy table, and
    ``out_dir/plots/accuracy.csv`` with every checkpoint of every run. ``chance``: ``{"test_acc": 1 / classes}``
    (``lib.plots.chance_levels``), recorded in ``out_dir/metrics.json`` for the figure (:mod:`lib.prune.plots`)."""
    from lib.results import save_stage_metrics

    frame = pd.DataFrame(results["rows"])
    if not results["grid"]:
        return save_stage_metrics(out_dir, results["rows"], plot="accuracy", arch=arch, plan=plan_name,
                                  **lineage(results["seed"], results["control"], results["control_of"]),
                                  chance=chance or {})
    for (run_arch, name), part in frame.groupby(["arch", "plan"], sort=False):
        save_stage_metrics(Path(out_dir) / run_arch / name, part.to_dict("records"), plot="accuracy",
                           arch=run_arch, plan=name, **lineage(results["seed"]))
    table = accuracy_table(frame)
    storage.save_json(Path(out_dir) / "metrics.json", {
        "dense": results["dense"],
        "test_acc": by_run(table),
        "pruned_acc": by_run(accuracy_table(frame, "pruned_acc")),  # before retraining
        "runs": sorted({f"{a}/{m}" for a, m in results["records"]}),
        "chance": chance or {},
    })
    storage.write_bytes(Path(out_dir) / "plots" / "accuracy.csv", frame.to_csv(index=False).encode())
    return Path(out_dir) / "metrics.json"


def by_run(table: pd.DataFrame) -> dict:
    """An accuracy table as ``{"arch/plan": {"target %": value}}`` (the grid's metrics.json)."""
    return {f"{a}/{m}": {f"{t:g}": v for t, v in row.dropna().items()} for (a, m), row in table.iterrows()}


def layer_table(records: list[dict], key: str = "sparsity") -> pd.DataFrame:
    """Per-layer ``key`` (sparsity, filters_removed, ...) of every checkpoint of one run: layers x steps."""
    return pd.DataFrame({r["step"]: {layer: v[key] for layer, v in r["accounting"]["per_layer"].items()}
                         for r in records})
