"""The report judged end to end: notebook 07, run as ``dvc.yaml`` runs it, on pipeline output trees written
by the metrics contract alone (CONTRACT.md: a ``seed<k>`` level, the controls as plans).

:func:`write_tree` knows nothing of any stage's code: it iterates ``lib.pipeline``'s declarations (every
analysis stage, its ``items`` table and ``item_id``, every declared :class:`~lib.pipeline.Metric` and its
per-item column) and writes what ``lib.results`` says a stage writes, per (arch, plan, seed): a plan, its
dense-retrained control (``control: retrained``, ``control_of``) and a ``random_init`` control (one step). The
per-item values are random with a strong correlation across checkpoints (a hard image stays hard), plus, per
(seed, checkpoint) network, a random offset (two trainings are two networks); align's per-trial table also
holds cue-conflict decisions, so shape bias is tested from them. ``params.yaml`` beside the tree declares the
matrix the report reads.

- Null with seed-level offsets as large as the item spread, 3 seeds, a gain planted only where the accuracy
  guard forbids a claim, and a copied folder: no claim, the copy named and not read.
- A gain shared by 5 seeds: found, against dense and the retrained control, at a planted checkpoint, with its
  accuracy in the table; the figure drawn.
- One seed, 6 items, a gain of 20 item SDs: "too few items for a claim among N tests".
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lib import storage
from lib.pipeline import ANALYSES, STAGES
from lib.results import MANIFEST, save_stage_metrics

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("arch_a", "arch_b")
PLAN, RETRAINED, RANDOM = "plan_a", "plan_a_retrained", "random_init"
STEPS = range(8)                                          # step 0 is the dense model
SPARSITY = {s: round(1 - 0.7 ** s, 4) for s in STEPS}     # 0, 0.3, 0.51, ... 0.918
DROP = {s: 0.0 if s < 6 else 0.3 for s in STEPS}          # steps 6 and 7 are broken: outside the accuracy guard
VARIANTS = ("one", "two")     # what ``*`` in a declared metric's name stands for (two attribution methods...)
MEAN, SD, CORRELATION = 0.5, 0.1, 0.8                     # per-item values: within-item correlation 0.8
CLASSES = ("c0", "c1", "c2", "c3")

# Each test runs notebook 07 once: ~45 s of CPU, ~90 s on two shared cores (most of it the figures).
pytestmark = pytest.mark.slow


def declared_columns(stage: str) -> list[tuple[str, object]]:
    """(metrics.json column, its declared Metric) for every metric ``stage`` declares, ``*`` expanded."""
    return [(metric.name.replace("*", v), metric) for metric in STAGES[stage].metrics
            for v in (VARIANTS if "*" in metric.name else ("",))]


def family_columns(stage: str) -> list[str]:
    """The columns of ``stage`` whose per-item values enter the report's family of tests."""
    return [c for c, m in declared_columns(stage) if m.tested and m.item_column(c) is not None]


def _decisions(rng, trials: int, shape_rate: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Cue-conflict trials (shape class, texture class) and, per checkpoint, decisions that follow the shape
    with probability ``shape_rate[j]``, the texture otherwise (columns: checkpoints)."""
    shape = rng.integers(0, len(CLASSES), trials)
    texture = (shape + rng.integers(1, len(CLASSES), trials)) % len(CLASSES)
    follows = rng.random((trials, len(shape_rate))) < shape_rate
    decisions = np.where(follows, shape[:, None], texture[:, None])
    return pd.DataFrame({"category": np.array(CLASSES)[shape], "texture": np.array(CLASSES)[texture]}), decisions


def write_tree(root: Path, seeds=(0,), items: int = 40, offset: float = 0.0, planted: dict | None = None,
               seed: int = 0) -> Path:
    """A pipeline output tree under ``root`` and its ``params.yaml`` (``root.parent``): for every arch, seed
    and plan (the plan, its retrained control, a random_init control) training's and pruning's metrics,
    pruning's manifest, and for every analysis stage its ``metrics.json`` (each declared metric per checkpoint:
    the mean of its per-item column where it has one) and its per-item table. ``offset``: the SD of each
    (seed, checkpoint) network's random offset, in item SDs. ``planted``: {(arch, column): (steps, gain in item
    SDs)}, a gain in the metric's declared direction shared by every seed, in the plan only (not its control)."""
    rng = np.random.default_rng(seed)
    planted = planted or {}
    params = {"archs": list(ARCHS), "plans": [PLAN, RETRAINED, RANDOM], "seeds": list(seeds),
              "variants": {"interpret": {}, "discover": {}, "align": {}}}
    (root.parent / "params.yaml").write_text(yaml.safe_dump(params))
    for arch in ARCHS:
        shared = {}  # per stage and column: the items' difficulty, the same images in every network
        for k in seeds:
            storage.save_json(root / "train" / arch / f"seed{k}" / "metrics.json", {"arch": arch, "seed": k,
                                                                                    "test_acc": 0.9, "params": 1000})
            for plan, control, of in ((PLAN, None, None), (RETRAINED, "retrained", PLAN), (RANDOM, "random_init", None)):
                steps = [0] if plan == RANDOM else list(STEPS)
                rows = [{"step": s, "sparsity": SPARSITY[s] if plan == PLAN else 0.0,
                         "test_acc": 0.1 if plan == RANDOM else 0.9 - (DROP[s] if plan == PLAN else 0.0)} for s in steps]
                info = {"arch": arch, "plan": plan, "seed": k}
                prune = root / "prune" / arch / plan / f"seed{k}"
                save_stage_metrics(prune, rows, plot="accuracy", control=control, control_of=of, **info)
                storage.save_json(prune / MANIFEST, {"checkpoints": [{**r, "file": f"checkpoints/step_{r['step']:02d}.pt"}
                                                                for r in rows]})
                for stage in ANALYSES:
                    declared = STAGES[stage]
                    names = [f"{declared.item_id}-{i}" for i in range(items)]
                    table = pd.DataFrame({"step": np.repeat(steps, items), declared.item_id: np.tile(names, len(steps))})
                    metrics = pd.DataFrame(rows)
                    for column, metric in declared_columns(stage):
                        item = metric.item_column(column)
                        if item is None:
                            continue
                        a = shared.setdefault((stage, column), rng.normal(size=(items, 1)))
                        values = MEAN + SD * (np.sqrt(CORRELATION) * a + np.sqrt(1 - CORRELATION)
                                              * rng.normal(size=(items, len(steps))))
                        values += SD * offset * rng.normal(size=(1, len(steps)))  # this network's own offset
                        if plan == PLAN and (arch, column) in planted:
                            where, gain = planted[(arch, column)]
                            values[:, list(where)] += (1 if metric.higher_is_better else -1) * gain * SD
                        table[item] = values.T.ravel()  # step-major, as ``table`` is laid out
                        metrics[column] = values.mean(0)
                    if stage == "align":  # cue-conflict decisions: shape bias is computed from them
                        rate = np.clip(0.3 + 0.1 * offset * rng.normal(size=len(steps)), 0.05, 0.95)
                        cues, decisions = _decisions(np.random.default_rng(seed + 7), items, rate)
                        table["dataset"] = "cue-conflict"
                        table["category"] = np.tile(cues["category"], len(steps))
                        table["texture"] = np.tile(cues["texture"], len(steps))
                        table["object_response"] = np.array(CLASSES)[decisions.T.ravel()]
                        follows = decisions == np.array([CLASSES.index(c) for c in cues["category"]])[:, None]
                        metrics["shape_bias"] = follows.mean(0)
                        metrics["ec_dense"] = 1.0
                    out = root / stage / arch / plan / f"seed{k}"
                    save_stage_metrics(out, metrics.to_dict("records"), plot=stage, **info)
                    table.to_csv(out / declared.items, index=False)
    return root


def run_report(root: Path, expect_failure: bool = False):
    """Notebook 07 run by the command of ``dvc.yaml``'s report stage, its ``data`` replaced by ``root`` and the
    matrix read from ``root.parent/params.yaml``: its ``metrics.json`` (or the failed run's stderr)."""
    command = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["cmd"]
    args = [re.sub(r"(^|=)data(?=/|$)", lambda m: m.group(1) + str(root), a) for a in shlex.split(command)]
    assert args[:3] == ["python", "-m", "lib.stage"], f"the report stage runs no notebook: {command}"
    args += [f"params_file={root.parent / 'params.yaml'}"] if "--set" in args else ["--set", f"params_file={root.parent / 'params.yaml'}"]
    done = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True)
    if expect_failure:
        assert done.returncode != 0
        return done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    out = Path(args[4])
    assert out.parent == root, f"the report's output {out} is not under the tree {root}"
    return json.loads((out / "metrics.json").read_text())


def family_of(spots: list[dict]) -> list[dict]:
    return [s for s in spots if s.get("p_value") is not None and not pd.isna(s["p_value"])]


def test_null_with_network_offsets_claims_nothing_and_reads_only_the_matrix(tmp_path):
    """3 seeds, every network with its own offset as large as the item spread, no effect of pruning, except a
    large gain at the two broken checkpoints (top-1 drop 0.3, tolerance 0.02): no claim anywhere; the copied
    folder is named, not read; every tested record names its selected checkpoint's accuracy."""
    arch = ARCHS[0]
    column = family_columns(ANALYSES[0])[0]
    root = write_tree(tmp_path / "data", seeds=(0, 1, 2), offset=1.0, planted={(arch, column): ((6, 7), 5.0)})
    shutil.copytree(root / "interpret" / arch / PLAN / "seed0", root / "interpret" / arch / "backup")
    report = run_report(root)
    spots = report["sweet_spots"]
    assert [s for s in spots if s.get("beats_dense")] == []
    assert report["not_read"] == [str(root / "interpret" / arch / "backup" / "metrics.json")]
    family = family_of(spots)
    expected = {(a, c) for a in ARCHS for stage in ANALYSES for c in family_columns(stage)} | \
               {(a, "shape_bias") for a in ARCHS}
    assert {(s["arch"], s["metric"]) for s in family} == expected
    assert all(s["plan"] == PLAN and s["seeds"] == 3 and s["unit"] == "network" for s in family)
    assert all(s["step"] not in (6, 7) and s["checkpoints"] == 5 for s in family)  # the guard: never selected
    planted = next(s for s in family if (s["arch"], s["metric"]) == (arch, column))
    assert planted["accuracy_drop"] <= 0.02 and planted["test_acc"] == pytest.approx(0.9)
    assert all(s["family_tests"] == 2 * len(expected) for s in family)  # against dense and against the control
    not_tested = [s for s in spots if s not in family]
    assert "ec_dense" in {s["metric"] for s in not_tested}  # 1 at dense by definition
    assert all(s["verdict"].startswith("not tested: ") for s in not_tested)
    points = pd.DataFrame(report["points"])
    broken = points[(points["plan"] == PLAN) & points["step"].isin([6, 7])]
    assert len(broken) and not broken["claimable"].any()  # drawn and tabled, never claimed


def test_a_gain_shared_by_the_seeds_is_found(tmp_path):
    """5 seeds, network offsets of a quarter of the item spread, a gain of 3 item SDs at steps 3-4 of two
    metrics of different stages in every seed (not in the retrained control): exactly those are claimed, against
    dense and the control, at a planted checkpoint whose accuracy is in the table; the claims figure is drawn."""
    arch = ARCHS[0]
    chosen = [(ANALYSES[0], family_columns(ANALYSES[0])[0]), (ANALYSES[-1], family_columns(ANALYSES[-1])[0])]
    planted = {(arch, column): ((3, 4), 3.0) for _, column in chosen}
    root = write_tree(tmp_path / "data", seeds=(0, 1, 2, 3, 4), offset=0.25, planted=planted)
    report = run_report(root)
    claimed = {(s["arch"], s["stage"], s["metric"]): s for s in report["sweet_spots"] if s.get("beats_dense")}
    assert set(claimed) == {(arch, stage, column) for stage, column in chosen}
    for spot in claimed.values():
        assert spot["step"] in (3, 4) and spot["beats_control"] and spot["p_adjusted"] <= 0.05
        assert spot["verdict"] == "beats dense and its retrained control [across 5 networks per step]"
        assert spot["test_acc"] == pytest.approx(0.9) and spot["accuracy_drop"] == pytest.approx(0.0)
        assert spot["gain_interval"][0] > 0 and spot["random_init"] is not None
    assert (root / "report" / "plots" / f"claims_{arch}.png").is_file()


def test_too_few_items_for_a_claim(tmp_path):
    """One network, 6 items, a gain of 20 item SDs: the smallest sign-flip p (1/64) times the family's size is
    above alpha, and the verdict says so instead of a detectable gain; the scope names the one network."""
    arch = ARCHS[0]
    column = family_columns(ANALYSES[0])[0]
    root = write_tree(tmp_path / "data", seeds=(0,), items=6, planted={(arch, column): ((2,), 20.0)})
    spots = run_report(root)["sweet_spots"]
    spot = next(s for s in spots if (s["arch"], s["metric"]) == (arch, column))
    n = int(spot["family_tests"])
    assert spot["p_value"] == pytest.approx(1 / 64) and not spot["beats_dense"]
    assert spot["verdict"] == f"too few items for a claim among {n} tests (smallest p 0.0156, times {n}: {n / 64:.3g})"


def test_an_empty_matrix_is_refused(tmp_path):
    root = write_tree(tmp_path / "data", seeds=(0,), items=4)
    params = yaml.safe_load((root.parent / "params.yaml").read_text())
    (root.parent / "params.yaml").write_text(yaml.safe_dump({**params, "plans": []}))
    assert "`plans` is []" in run_report(root, expect_failure=True)
