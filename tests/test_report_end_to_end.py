"""The report judged end to end: notebook 07, run as ``dvc.yaml`` runs it, on pipeline output trees written
by the metrics contract alone.

:func:`write_tree` knows nothing of any stage's code: it iterates ``lib.pipeline``'s declarations (every
analysis stage, its ``items`` table and ``item_id``, every declared :class:`~lib.pipeline.Metric` and its
per-item column) and writes what ``lib.results`` says a stage writes (``metrics.json`` with a row per
checkpoint, the per-item table, the pruning stage's ``pruning.json``). A metric declared tomorrow is
written, and so tested, without a change here. The per-item values are random with a strong correlation
across checkpoints (a hard image stays hard when the model is pruned), as the report's paired tests expect.

- Null tree (no effect anywhere): the report claims no sweet spot.
- Planted tree (a gain of one per-item standard deviation at two adjacent sparsities, in two tested
  metrics of different stages, one architecture): exactly those two are claimed, at the planted sparsities.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lib import storage
from lib.pipeline import ANALYSES, STAGES
from lib.report import KEYS
from lib.results import MANIFEST, save_stage_metrics

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("arch_a", "arch_b")
METHOD = "plan_a"
STEPS = range(8)                                          # step 0 is the dense model
SPARSITY = {s: round(1 - 0.7 ** s, 4) for s in STEPS}     # 0, 0.3, 0.51, ... 0.918
ITEMS = 40
VARIANTS = ("one", "two")     # what ``*`` in a declared metric's name stands for (two attribution methods...)
MEAN, SD, CORRELATION = 0.5, 0.1, 0.8                     # per-item values: within-item correlation 0.8
PLANTED_STEPS = (3, 4)
GAIN = 1.0 * SD

# Each test runs notebook 07 once: ~45 s of CPU, ~90 s on two shared cores (most of it the two figures).
pytestmark = pytest.mark.slow


def declared_columns(stage: str) -> list[tuple[str, object]]:
    """(metrics.json column, its declared Metric) for every metric ``stage`` declares, ``*`` expanded."""
    return [(metric.name.replace("*", v), metric) for metric in STAGES[stage].metrics
            for v in (VARIANTS if "*" in metric.name else ("",))]


def family_columns(stage: str) -> list[str]:
    """The columns of ``stage`` that enter the report's family of tests: tested and with per-item values."""
    return [c for c, m in declared_columns(stage) if m.tested and m.item_column(c) is not None]


def _item_values(rng, direction: float, planted: bool) -> np.ndarray:
    """(items, checkpoints): MEAN + SD (sqrt(r) a_i + sqrt(1 - r) e_ij), plus GAIN in ``direction`` at the
    planted steps."""
    shared, own = rng.normal(size=(ITEMS, 1)), rng.normal(size=(ITEMS, len(STEPS)))
    values = MEAN + SD * (np.sqrt(CORRELATION) * shared + np.sqrt(1 - CORRELATION) * own)
    if planted:
        values[:, list(PLANTED_STEPS)] += direction * GAIN
    return values


def _info(arch: str) -> dict:
    """The info keys of a run's metrics.json that name its checkpoints' (arch, pruning run)."""
    return dict(zip(KEYS[:2], (arch, METHOD)))


def write_tree(root: Path, planted: set = frozenset(), seed: int = 0) -> Path:
    """A pipeline output tree under ``root`` as the contract describes it: training's and pruning's metrics,
    pruning's manifest, and for every analysis stage of :data:`lib.pipeline.ANALYSES` and every arch its
    ``metrics.json`` (each declared metric per checkpoint: the mean of its per-item column where it has one,
    a random number otherwise) and its per-item table. ``planted``: (arch, column) pairs that get a gain of
    :data:`GAIN` in their declared direction at :data:`PLANTED_STEPS`."""
    rng = np.random.default_rng(seed)
    rows = [{"step": s, "sparsity": SPARSITY[s]} for s in STEPS]
    for arch in ARCHS:
        storage.save_json(root / "train" / arch / "metrics.json", {"arch": arch, "test_acc": 0.9})
        prune = root / "prune" / arch / METHOD
        save_stage_metrics(prune, [{**r, "test_acc": 0.9 - r["sparsity"] / 10} for r in rows], plot="accuracy",
                           **_info(arch))
        storage.save_json(prune / MANIFEST, {"checkpoints": [{**r, "file": f"checkpoints/step_{r['step']:02d}.pt"}
                                                        for r in rows]})
        for stage in ANALYSES:
            declared = STAGES[stage]
            names = [f"{declared.item_id}-{i}" for i in range(ITEMS)]
            items = pd.DataFrame({"step": np.repeat(list(STEPS), ITEMS), declared.item_id: np.tile(names, len(STEPS))})
            metrics = pd.DataFrame(rows)
            for column, metric in declared_columns(stage):
                item = metric.item_column(column)
                if item is None:
                    metrics[column] = rng.uniform(0, 1, len(STEPS))
                    continue
                direction = 1.0 if metric.higher_is_better else -1.0
                values = _item_values(rng, direction, (arch, column) in planted)
                items[item] = values.T.ravel()  # step-major, as ``items`` is laid out
                metrics[column] = values.mean(0)
            out = root / stage / arch / METHOD
            save_stage_metrics(out, metrics.to_dict("records"), plot=stage, **_info(arch))
            items.to_csv(out / declared.items, index=False)
    return root


def run_report(root: Path) -> dict:
    """Notebook 07 run by the command of ``dvc.yaml``'s report stage, its ``data`` replaced by ``root``:
    the sweet-spot records of its ``metrics.json``."""
    command = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["cmd"]
    args = [re.sub(r"(^|=)data(?=/|$)", lambda m: m.group(1) + str(root), a) for a in shlex.split(command)]
    assert args[:3] == ["python", "-m", "lib.stage"], f"the report stage runs no notebook: {command}"
    done = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = Path(args[4])
    assert out.parent == root, f"the report's output {out} is not under the tree {root}"
    return json.loads((out / "metrics.json").read_text())["sweet_spots"]


def is_tested(spot: dict) -> bool:
    """Whether the report tested this record (the others say why not)."""
    return spot.get("p_value") is not None and not pd.isna(spot["p_value"])


def family(spots: list[dict]) -> list[dict]:
    return [s for s in spots if is_tested(s)]


def expected_family() -> set:
    return {(arch, stage, column) for arch in ARCHS for stage in ANALYSES for column in family_columns(stage)}


def test_no_effect_anywhere_no_sweet_spot(tmp_path):
    """Family: 2 archs x the tested per-item metrics of the analysis stages (8 columns each today: rma and
    rra of two attribution methods, CorLoc of two discovery methods, OOD accuracy, MIS) = 16 tests, more when
    a stage declares more; Holm at 0.05. With this seed no record beats dense (the criterion allows one)."""
    spots = run_report(write_tree(tmp_path / "data"))
    tested = family(spots)
    assert {(s["arch"], s["stage"], s["metric"]) for s in tested} == expected_family()
    assert len(tested) >= 16 and all(s["items"] == ITEMS and s["checkpoints"] == len(STEPS) - 1 for s in tested)
    assert all(s["correction"] == "holm" and s["alpha"] == 0.05 for s in tested)
    claimed = [(s["arch"], s["metric"]) for s in spots if s.get("beats_dense")]
    assert claimed == []
    # every declared metric is in the report: tested, or with the reason it is not
    shown = {(s["arch"], s["metric"]) for s in spots}
    assert shown == {(a, c) for a in ARCHS for stage in ANALYSES for c, _ in declared_columns(stage)}
    assert all(s["verdict"].startswith("not tested: ") for s in spots if not is_tested(s))


def planted_metrics() -> list[tuple[str, str]]:
    """Two tested metrics of different stages: the first tested column of the first and the last analysis
    stage (``interpret`` and ``mis`` today)."""
    return [(stage, family_columns(stage)[0]) for stage in (ANALYSES[0], ANALYSES[-1])]


def test_planted_gains_are_found_and_nothing_else(tmp_path):
    """A gain of one per-item sd (the differences' sd is 0.63 of it) on 40 items at two adjacent sparsities of
    two metrics of one architecture: those two records are claimed, at a planted sparsity, with a location
    interval inside the planted ones and a simultaneous gain interval that holds the planted gain."""
    arch = ARCHS[0]
    chosen = planted_metrics()
    assert chosen[0][0] != chosen[1][0]
    spots = run_report(write_tree(tmp_path / "data", planted={(arch, column) for _, column in chosen}))
    assert {(s["arch"], s["stage"], s["metric"]) for s in family(spots)} == expected_family()
    claimed = {(s["arch"], s["stage"], s["metric"]): s for s in spots if s.get("beats_dense")}
    assert set(claimed) == {(arch, stage, column) for stage, column in chosen}
    planted = [SPARSITY[s] for s in PLANTED_STEPS]
    for spot in claimed.values():
        assert spot["sparsity"] in planted and spot["verdict"] == "beats dense"
        low, high = spot["sparsity_interval"]  # the location interval holds the sweet spot, and only planted sparsities
        assert min(planted) <= low <= spot["sparsity"] <= high <= max(planted), spot["sparsity_interval"]
        assert 0 < spot["gain_interval"][0] <= GAIN <= spot["gain_interval"][1] and spot["p_adjusted"] <= 0.05
