"""Pruning schedules and their checkpoints.

A :class:`PruningPlan` names a pruner (what is removed: ``unstructured`` weights, ``filters`` or
``connections``, selected by ``l1`` norm or at ``random``, over all layers or per ``layer``; see
``lib.prune.methods``) and a schedule (when):

- ``lrr`` (Study A): learning-rate rewinding. Each round removes ``rate`` of the remaining weights
  and retrains with the full original recipe (optimizer and schedule rebuilt), until the sparsity
  reaches ``threshold``: round i has sparsity 1 - (1 - rate)^i.
- ``iterative`` (Study B): prune/retrain steps from one target to the next: the first target of
  ``targets`` in ``steps`` equal steps, each later one in a single step from the previous.
- ``oneshot`` (Study B): for every target, prune the dense model to it at once, then retrain; with a
  recipe of ``epochs: 0``, no retraining: the pruned weights as they are (the real-data Lite0 study).

What is prunable: ``layers`` (conv, linear), ``exclude`` (module names or fnmatch patterns, e.g. GoogLeNet's
stem ``conv1``, ``conv2``, ``conv3`` and auxiliary heads ``aux*``), ``exclude_classifier``, ``include_bias``
(biases ranked with the weights, Study B's ``global_unstructured``), ``attention_qkv`` (False: attention's packed
Q/K/V stay dense, as Study A's code leaves them). How: ``masking`` ``persistent`` (a mask keeps the removed
weights at zero while retraining) or ``regrowing`` (zeroed once, no mask: they may grow back, Study B's headline
connection sparsity); ``rounding`` of per-layer counts (``nearest`` or ``floor``, Study B's ``int()``);
``filter_companions`` (filters take their bias and batch-norm channel with them; False: the weights only, as
``torch.nn.utils.prune.ln_structured``). docs/studies.md (the Protocol table) lists which values reproduce each study.

Every step writes ``checkpoints/step_XX.pt`` (folded weights + masks) and is listed in
``pruning.json`` with its accounting (``lib.prune.accounting``) and test accuracy after retraining
(``test_acc``) and before it (``pruned_acc``: the pruned model as pruning left it; the dense model's own
accuracy at step 0); step 0 is the dense model, so every
analysis sees the dense reference too. A run that is interrupted resumes at the first step without
a valid checkpoint (and, inside a step, at the last finished epoch).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from lib.storage import progress_bar as tqdm

from lib import distributed as dd
from lib import storage
from lib.data.datasets import shapes_data
from lib.params import dataclass_from_params
from lib.models import get_spec, load_checkpoint, save_checkpoint
from lib.prune.accounting import accounting
from lib.prune.masks import apply_masks, current_masks, fold_masks, prunable_parameters
from lib.prune.methods import PRUNERS, ROUNDINGS, SCOPES, SELECTIONS, get_pruner
from lib.imports import code_digest
from lib.results import MANIFEST, list_checkpoints  # noqa: F401  (the manifest's format)
from lib.train import Recipe, data_identity, evaluate, fit

SCHEDULES = ("lrr", "iterative", "oneshot")
MASKINGS = ("persistent", "regrowing")


@dataclass(frozen=True)
class PruningPlan:
    schedule: str = "lrr"                 # lrr | iterative | oneshot
    pruner: str = "unstructured"          # unstructured | filters | connections
    selection: str = "l1"                 # l1 | random (the control)
    scope: str = "global"                 # global | layer (allocation of the sparsity over layers)
    # lrr (required there, no default of their own: params.yaml's prune.<plan>.plan gives them; other schedules
    # ignore them): the share of the remaining weights removed per round, and the sparsity that stops the rounds
    rate: float | None = None
    threshold: float | None = None
    targets: tuple = ()                   # iterative / oneshot: target sparsities
    steps: int = 3                        # iterative: prune/retrain steps to reach the first target
    layers: tuple = ("conv", "linear")    # prunable layer kinds
    exclude_classifier: bool = True
    exclude: tuple = ()                   # further module names or fnmatch patterns left dense (conv1, aux*)
    seed: int = 0                         # random selection: step i draws with seed * 100003 + i (the run's seed)
    include_bias: bool = False            # unstructured: biases of the prunable layers ranked with the weights
    attention_qkv: bool = True            # False: attention's packed Q/K/V projections stay dense (Study A)
    masking: str = "persistent"           # persistent (mask kept while retraining) | regrowing (zeroed once)
    rounding: str = "nearest"             # per-layer counts: nearest | floor (Study B's int(rate x channels))
    filter_companions: bool = True        # filters: also the filter's bias and batch-norm channel

    def __post_init__(self):
        choices = {"schedule": SCHEDULES, "pruner": tuple(PRUNERS), "selection": SELECTIONS, "scope": SCOPES,
                   "masking": MASKINGS, "rounding": ROUNDINGS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}; choose one of {', '.join(allowed)}")
        if self.rate is not None and not 0 < self.rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")
        if self.threshold is not None and not 0 < self.threshold < 1:  # 0 would still prune one round: not what it says
            raise ValueError(f"threshold (a sparsity) must be in (0, 1), got {self.threshold}")
        missing = [key for key in ("rate", "threshold") if getattr(self, key) is None]
        if self.schedule == "lrr" and missing:
            raise ValueError(f"schedule lrr needs {' and '.join(missing)} (rate: the share of the remaining weights "
                             "removed per round; threshold: the sparsity that stops the rounds), as params.yaml's "
                             "prune.lrr.plan gives them")
        bad = [t for t in self.targets if not 0 < t < 1]
        if bad:
            raise ValueError(f"target sparsities must be in (0, 1), got {bad}")
        if self.schedule != "lrr" and not self.targets:
            raise ValueError(f"schedule {self.schedule!r} needs at least one target sparsity in `targets`")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.include_bias and self.pruner != "unstructured":
            raise ValueError(f"include_bias applies to unstructured pruning; {self.pruner} removes whole channels "
                             "(filters take their bias with them: filter_companions)")

    @classmethod
    def from_dict(cls, params: dict) -> "PruningPlan":
        return dataclass_from_params(cls, params, "pruning", tuple_fields=("targets", "layers", "exclude"))

    def sparsities(self) -> list[tuple[float, int]]:
        """(target sparsity, parent step) of every pruning step; parent 0 is the dense model."""
        if self.schedule == "lrr":
            rounds = max(1, math.ceil(math.log(1 - self.threshold) / math.log(1 - self.rate) - 1e-9))
            return [(1 - (1 - self.rate) ** i, i - 1) for i in range(1, rounds + 1)]
        if self.schedule == "oneshot":
            return [(t, 0) for t in sorted(self.targets)]
        targets = sorted(self.targets)
        chain, previous = [], 0.0
        for j, target in enumerate(targets):  # first target in `steps` steps, later ones in one step each
            n = self.steps if j == 0 else 1
            chain += [previous + (target - previous) * (k + 1) / n for k in range(n)]
            previous = target
        return [(t, i) for i, t in enumerate(chain)]

    def prunable(self, model, model_name: str):
        """The prunable layers of ``model`` under this plan (the classifier excluded if asked)."""
        classifier = get_spec(model_name).classifier
        exclude = self.exclude + ((classifier,) if self.exclude_classifier and classifier else ())
        return prunable_parameters(model, self.layers, exclude, include_bias=self.include_bias,
                                   attention_qkv=self.attention_qkv)

    def layer_set(self) -> tuple:
        """What decides the prunable tensors (plans that share it share the dense model's accounting)."""
        return (self.layers, self.exclude, self.exclude_classifier, self.include_bias, self.attention_qkv)

    def pruner_for(self, step: int):
        """The pruner of one step (its random selection seeded by the run's seed and the step: no two (seed, step)
        pairs below 100003 steps draw alike, so the seeds' random draws are independent)."""
        return get_pruner(self.pruner, self.selection, self.scope, seed=self.seed * 100_003 + step,
                          persistent=self.masking == "persistent", rounding=self.rounding,
                          companions=self.filter_companions)


def run_schedule(dense_checkpoint: str | Path, plan: PruningPlan, recipe: Recipe, data, out_dir: str | Path,
                 progress: bool = True, dense_eval: dict | None = None, channels_last: bool = True,
                 control: str | None = None, control_of: str | None = None) -> list[dict]:
    """Run a pruning schedule from a dense checkpoint; write its checkpoints and manifest to ``out_dir``.

    ``control="retrained"``: the plan's schedule with nothing pruned (``control_of``: the pruned plan's name):
    step r starts from step r's parent exactly as the pruned run's does and gets the same retraining (recipe and
    seed), so it differs from the pruned step r only by what pruning removed (a oneshot plan's control steps all
    retrain the dense model once: computed once, the same weights at every step). Every record says how many epochs
    of retraining its checkpoint received since the dense model (``retrain_epochs``).

    ``data``: the embedded dataset's directory, or a dict with datasets ``train`` (retraining),
    ``val`` (monitoring), ``test``, plus ``image_size`` and an ``id`` (see ``lib.prune.runs``).
    ``dense_eval``: the dense model's ``test_acc``/``val_acc`` (and ``accounting``) if already known.
    Steps already in ``out_dir/pruning.json`` of the same plan, recipe, data and dense model are kept
    (resume); retraining state lives in ``out_dir/state`` until the schedule has finished.
    """
    out_dir = Path(out_dir)
    state_dir = out_dir / "state"
    dense, info = load_checkpoint(dense_checkpoint)  # validates the file before any compute
    model_info = info["model"]
    spec = get_spec(model_info["name"])
    if not isinstance(data, dict):
        data = shapes_data(data, spec.mean, spec.std)
    missing = {"train", "val", "test", "image_size", "id"} - set(data)
    if missing:
        raise ValueError(f"pruning data lacks {sorted(missing)}")
    example_input = torch.zeros(2, 3, data["image_size"], data["image_size"])
    # resume key by content: the dense checkpoint's bytes and the data's fingerprint, not their paths
    if control not in (None, "retrained"):
        raise ValueError(f"run_schedule runs a plan or its retrained control, not control {control!r} "
                         "(random_init: run_random_init)")
    identity = {"plan": asdict(plan), "recipe": recipe.identity(), "dense": storage.file_sha256(dense_checkpoint)[:16],
                "data": data_identity(data),
                "dense_test_acc": info["meta"].get("test_acc"), "code": code_digest([__name__])[:16],
                **({"control": control} if control else {})}

    def label(step, split):  # the progress bar's label of an evaluation, None without progress
        return f"step {step}: top-1 on {split}" if progress else None

    def record(step, model, parent, target, known=None, pruned_acc=None, retrain_epochs=0):
        known = known or {}
        acct = known.get("accounting") or accounting(model, plan.prunable(model, model_info["name"]), example_input)
        test_acc = known["test_acc"] if "test_acc" in known else evaluate(model, data["test"],
                                                                          progress=label(step, "test"))
        val_acc = known["val_acc"] if "val_acc" in known else evaluate(model, data["val"], progress=label(step, "val"))
        return {"step": step, "file": f"checkpoints/step_{step:02d}.pt", "parent": parent, "target": target,
                "sparsity": acct["sparsity"], "test_acc": test_acc, "val_acc": val_acc,
                "pruned_acc": test_acc if step == 0 else pruned_acc, "retrain_epochs": retrain_epochs,
                "accounting": acct}

    def save(model, masks, rec):
        if dd.is_main():
            save_checkpoint(out_dir / rec["file"], model, model_info["name"], model_info["num_classes"],
                            model_info["kwargs"], masks=masks, step=rec["step"], sparsity=rec["sparsity"],
                            plan=asdict(plan), seed=recipe.seed, control=control)
            rec["sha256"] = storage.file_sha256(out_dir / rec["file"])  # analyses verify it before scoring

    existing = {}
    if (out_dir / MANIFEST).is_file():
        manifest = storage.load_json(out_dir / MANIFEST)
        if manifest.get("identity") == json.loads(json.dumps(identity)):  # tuples read back as lists
            existing = {r["step"]: r for r in manifest["checkpoints"]}
            if existing and dd.is_main():
                storage.notice(f"resuming {out_dir}: step(s) {sorted(existing)} of the same run are kept")
        elif dd.is_main():
            storage.notice(f"ignoring the checkpoints in {out_dir}: they were made with other parameters, data or "
                      "dense model; pruning from the start")

    records = {}

    def write_manifest():
        if dd.is_main():
            storage.save_json(out_dir / MANIFEST, {"identity": identity, "model": model_info["name"],
                                                   "plan": asdict(plan), "recipe": recipe.identity(),
                                                   **lineage(recipe.seed, control, control_of),
                                              "checkpoints": [records[k] for k in sorted(records)]})

    steps = [(0.0, None)] + plan.sparsities()
    for step, (target, parent) in enumerate(tqdm(steps, desc="pruning steps", disable=not (progress and dd.is_main()))):
        path = out_dir / f"checkpoints/step_{step:02d}.pt"
        if step in existing and path.is_file():
            try:
                load_checkpoint(path)
                records[step] = {**existing[step], "sha256": storage.file_sha256(path)}
                continue
            except storage.CheckpointError as error:
                storage.notice(f"redoing step {step}: {error}")
        if step == 0:
            rec = record(0, dense, None, 0.0, dense_eval)
            save(dense, {}, rec)
        else:
            model, parent_info = load_checkpoint(out_dir / f"checkpoints/step_{parent:02d}.pt")
            if parent_info["masks"]:
                apply_masks(model, parent_info["masks"])
            if control is None:
                plan.pruner_for(step).prune(model, plan.prunable(model, model_info["name"]), target, example_input)
                # Study B reports accuracy before retraining too: what pruning alone costs, what retraining recovers
                pruned_acc = evaluate(model, data["test"], progress=label(step, "test, before retraining"))
            else:  # the control prunes nothing: before retraining it is its parent, whose accuracy is recorded
                pruned_acc, target = records[parent]["test_acc"], 0.0
            trained = 0
            twin = next((r for r in records.values() if control and r["parent"] == parent), None)
            if twin is not None:  # a control's steps from one parent are one computation (oneshot): done once
                model, _ = load_checkpoint(out_dir / twin["file"])
                trained = twin["retrain_epochs"] - records[parent].get("retrain_epochs", 0)
            elif recipe.epochs:  # epochs 0: pruning without retraining, the pruned weights as they are
                if channels_last:  # oneDNN's convolutions are markedly faster in NHWC on CPUs
                    model.to(memory_format=torch.channels_last)
                history = fit(model, data["train"], data["val"], recipe, state_dir / f"step_{step:02d}",
                              image_size=data["image_size"], run_info={"step": step, "identity": identity},
                              progress=progress, teacher=dense)["history"]  # teacher: a distillation recipe only
                trained = len(history)
            masks = current_masks(model)
            fold_masks(model)
            model.to(memory_format=torch.contiguous_format)
            # without retraining the checkpoint is the pruned model: its test accuracy is the one just measured
            known = {} if recipe.epochs else {"test_acc": pruned_acc}
            if twin is not None:  # the same weights: the same scores
                known = {k: twin[k] for k in ("test_acc", "val_acc", "accounting")}
            rec = record(step, model, parent, target, known, pruned_acc=pruned_acc,
                         retrain_epochs=records[parent].get("retrain_epochs", 0) + trained)
            save(model, masks, rec)
        records[step] = rec
        write_manifest()
        dd.barrier()
    if dd.is_main():
        shutil.rmtree(state_dir, ignore_errors=True)
    return [records[k] for k in sorted(records)]


CONTROLS = ("retrained", "random_init")


def lineage(seed: int, control: str | None = None, control_of: str | None = None) -> dict:
    """What a prune stage's manifest and metrics.json say about the network: its ``seed``, and whether it is a
    ``control`` (``retrained``: ``control_of``'s schedule with nothing pruned; ``random_init``) or a pruned plan
    (``control`` None). The analyses copy it from their source (``lib.results.source_lineage``)."""
    return {"seed": seed, "control": control, "control_of": control_of}


def run_random_init(dense_checkpoint: str | Path, seed: int, data, out_dir: str | Path) -> list[dict]:
    """The random-initialisation control: one checkpoint (step 0, sparsity 0) of the dense model's architecture
    with fresh weights drawn from ``seed`` exactly as training draws its initial weights (``seed_everything(seed)``,
    then the model is built): the floor every score must clear. Written with its manifest to ``out_dir``."""
    from lib.models import create_model
    from lib.train import seed_everything

    out_dir = Path(out_dir)
    _, info = load_checkpoint(dense_checkpoint)
    model_info = info["model"]
    spec = get_spec(model_info["name"])
    if not isinstance(data, dict):
        data = shapes_data(data, spec.mean, spec.std)
    seed_everything(seed)
    kwargs = {k: v for k, v in model_info["kwargs"].items() if k != "pretrained"}  # a package's weights: not loaded
    model = create_model(model_info["name"], num_classes=model_info["num_classes"], **kwargs).eval()
    # the accounting counts the layers a plan prunes by default (conv and linear, the classifier left out); nothing
    # is pruned
    classifier = spec.classifier
    example_input = torch.zeros(2, 3, data["image_size"], data["image_size"])
    acct = accounting(model, prunable_parameters(model, exclude=(classifier,) if classifier else ()), example_input)
    test_acc = evaluate(model, data["test"])
    rec = {"step": 0, "file": "checkpoints/step_00.pt", "parent": None, "target": 0.0, "sparsity": acct["sparsity"],
           "test_acc": test_acc, "val_acc": evaluate(model, data["val"]), "pruned_acc": test_acc,
           "retrain_epochs": 0, "accounting": acct}
    if dd.is_main():
        save_checkpoint(out_dir / rec["file"], model, model_info["name"], model_info["num_classes"], kwargs,
                        step=0, sparsity=rec["sparsity"], seed=seed, control="random_init")
        rec["sha256"] = storage.file_sha256(out_dir / rec["file"])  # analyses verify it before scoring
        identity = {"control": "random_init", "seed": seed, "architecture": model_info,
                    "data": data_identity(data)}
        storage.save_json(out_dir / MANIFEST, {"identity": identity, "model": model_info["name"], "plan": None,
                                               "recipe": None,
                                               **lineage(seed, "random_init"), "checkpoints": [rec]})
    dd.barrier()
    return [rec]
