"""Pruning plans and schedules: one-shot, iterative and LRR checkpoints with their sparsity and accounting."""

import pytest
import torch

from lib.checkpoints import iter_checkpoints
from lib.models import create_model, load_checkpoint, save_checkpoint
from lib.prune import PruningPlan, list_checkpoints, run_schedule
from lib.train import Recipe

RECIPE = Recipe(epochs=1, batch_size=32, lr=0.01, augment=(), seed=0)


def test_plan_sparsities():
    assert PruningPlan(schedule="oneshot", targets=(0.7, 0.5)).sparsities() == [(0.5, 0), (0.7, 0)]
    chain = PruningPlan(schedule="iterative", targets=(0.5, 0.7, 0.9), steps=2).sparsities()
    assert [round(t, 6) for t, _ in chain] == [0.25, 0.5, 0.7, 0.9] and [p for _, p in chain] == [0, 1, 2, 3]
    lrr = PruningPlan(schedule="lrr", rate=0.2, threshold=0.5).sparsities()
    assert [round(t, 4) for t, _ in lrr] == [0.2, 0.36, 0.488, 0.5904]


@pytest.mark.parametrize("bad, message", [
    ({"pruner": "channels"}, "unknown pruner"), ({"selection": "taylor"}, "unknown selection"),
    ({"scope": "net"}, "unknown scope"), ({"schedule": "oneshot"}, "needs at least one target"),
    ({"schedule": "oneshot", "targets": [1.2]}, "target sparsities"), ({"step": 3}, "unknown pruning parameter")])
def test_plan_rejects_bad_parameters(bad, message):
    with pytest.raises(ValueError, match=message):
        PruningPlan.from_dict(bad)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dense") / "model.pt"
    model = create_model("small_cnn", 10, widths=(8, 16), convs=(1, 1))
    save_checkpoint(path, model, "small_cnn", 10, {"widths": [8, 16], "convs": [1, 1]}, test_acc=0.1)
    return path


def test_oneshot_filters(dense, tiny_shapes, tmp_path):
    plan = PruningPlan(schedule="oneshot", pruner="filters", scope="layer", targets=(0.5,))
    records = run_schedule(dense, plan, RECIPE, tiny_shapes, tmp_path, progress=False)
    assert [r["step"] for r in records] == [0, 1] and records[1]["parent"] == 0
    assert records[1]["sparsity"] == pytest.approx(0.5)
    acct = records[1]["accounting"]
    assert [v["filters_removed"] for v in acct["per_layer"].values()] == [4, 8]
    assert acct["compacted_params"] < acct["params"] and 0 <= records[1]["test_acc"] <= 1
    _, info = load_checkpoint(tmp_path / "checkpoints/step_01.pt")
    assert {"features.0.0.weight", "features.0.1.weight", "features.0.1.bias"} <= set(info["masks"])
    assert not (tmp_path / "state").exists()
    # resume: a second call finds every step done and trains nothing
    stamp = (tmp_path / "checkpoints/step_01.pt").stat().st_mtime_ns
    assert run_schedule(dense, plan, RECIPE, tiny_shapes, tmp_path, progress=False) == records
    assert (tmp_path / "checkpoints/step_01.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_accuracy_before_retraining_is_the_pruned_dense_model_s(dense, tiny_shapes, tmp_path):
    from lib.data.datasets import shapes_data
    from lib.models import get_spec
    from lib.train import evaluate

    plan = PruningPlan(schedule="oneshot", pruner="unstructured", targets=(0.5,))
    recipe = Recipe(epochs=4, batch_size=32, lr=0.2, augment=(), seed=0)  # enough to move the accuracy
    records = run_schedule(dense, plan, recipe, tiny_shapes, tmp_path, progress=False)
    assert records[0]["pruned_acc"] == records[0]["test_acc"]  # the dense model is not pruned
    assert records[1]["pruned_acc"] != records[1]["test_acc"]  # retraining changed it: the two are told apart
    model, _ = load_checkpoint(dense)
    spec = get_spec("small_cnn")
    data = shapes_data(tiny_shapes, spec.mean, spec.std)
    plan.pruner_for(1).prune(model, plan.prunable(model, "small_cnn"), 0.5, torch.zeros(2, 3, data["image_size"],
                                                                                         data["image_size"]))
    assert records[1]["pruned_acc"] == evaluate(model, data["test"])


def test_iterative_connections_grow_masks_along_the_chain(dense, tiny_shapes, tmp_path):
    plan = PruningPlan(schedule="iterative", pruner="connections", targets=(0.4, 0.6), steps=2, selection="random")
    records = run_schedule(dense, plan, RECIPE, tiny_shapes, tmp_path, progress=False)
    assert [r["parent"] for r in records] == [None, 0, 1, 2]
    assert [round(r["target"], 3) for r in records] == [0.0, 0.2, 0.4, 0.6]
    assert all(abs(r["sparsity"] - r["target"]) < 0.05 for r in records)
    masks = [load_checkpoint(tmp_path / r["file"])[1]["masks"] for r in records[1:]]
    for parent, child in zip(masks, masks[1:]):
        assert all(not (child[k] & ~parent[k]).any() for k in parent)
    # the stage contract every analysis reads
    assert [rec["step"] for rec, _ in iter_checkpoints(tmp_path)] == [0, 1, 2, 3]
    assert len(list_checkpoints(tmp_path)) == 4


def test_lrr_default_plan_still_prunes_unstructured(dense, tiny_shapes, tmp_path):
    plan = PruningPlan.from_dict({"schedule": "lrr", "rate": 0.5, "threshold": 0.7, "layers": ["conv", "linear"],
                                  "exclude_classifier": True})
    records = run_schedule(dense, plan, RECIPE, tiny_shapes, tmp_path, progress=False)
    assert [round(r["sparsity"], 3) for r in records] == [0.0, 0.5, 0.75]
    model, info = load_checkpoint(tmp_path / "checkpoints/step_02.pt")
    assert set(info["masks"]) == {"features.0.0.weight", "features.2.0.weight"}  # the classifier stays dense
    assert (model.features[0][0].weight[~info["masks"]["features.0.0.weight"]] == 0).all()


def test_accuracy_figure_is_against_the_target_with_before_retraining_dashed():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    from lib.prune.plots import plot_accuracy

    # a regrowing run: measured sparsity near 0 after retraining, its target is what it was pruned to
    frame = pd.DataFrame({"arch": "r20", "plan": ["a", "a", "b", "b"], "target": [0.0, 0.5, 0.0, 0.5],
                          "sparsity": [0.0, 0.01, 0.0, 0.5], "test_acc": [0.9, 0.8, 0.9, 0.6],
                          "pruned_acc": [0.9, 0.3, 0.9, 0.2]})
    lines = plot_accuracy(frame).axes[0].get_lines()
    solid = {ln.get_label(): ln for ln in lines if ln.get_linestyle() == "-"}
    dashed = [ln for ln in lines if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    assert list(solid["a"].get_xdata()) == [0.0, 50.0] and list(solid["a"].get_ydata()) == [0.9, 0.8]
    assert [list(ln.get_ydata()) for ln in dashed] == [[0.9, 0.3], [0.9, 0.2]]
    assert [ln.get_color() for ln in dashed] == [solid["a"].get_color(), solid["b"].get_color()]
