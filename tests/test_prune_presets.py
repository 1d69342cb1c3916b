"""The pruning presets: parameters known to the notebook; Study B's ImageNet preset runs on a tiny stand-in."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lib.stage
from lib.prune import PruningPlan
from lib.data.datasets import DATASETS
from lib.models import PRETRAINED_KEYS
from lib.train import Recipe

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["cifar10_resnet", "studyB_googlenet"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parameters_are_known_and_valid(name):
    notebook, out_dir, params = lib.stage.load_preset(ROOT / "presets" / f"{name}.yaml")
    lib.stage.check_parameters(ROOT / notebook, params)
    assert out_dir == Path("results") / name
    assert set(params["dataset"]) - {"name"} <= DATASETS[params["dataset"]["name"]].keys
    assert all(set(source) <= PRETRAINED_KEYS for source in params["models"].values())
    plans = {k: PruningPlan.from_dict(v) for k, v in params["plans"].items()}
    assert {(p.pruner, p.schedule) for p in plans.values()} == {
        (m, s) for m in ("unstructured", "filters", "connections") for s in ("oneshot", "iterative")}
    Recipe.from_dict(params["recipe"])


@pytest.mark.slow
def test_studyB_preset_on_a_tiny_imagenet_stand_in(tmp_path):
    import torchvision

    notebook, _, params = lib.stage.load_preset(ROOT / "presets" / "studyB_googlenet.yaml")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):  # ImageNet layout: root/{train,val}/<wnid>/*.JPEG
        for wnid in ("n01440764", "n01443537", "n01484850"):
            (tmp_path / "imagenet" / split / wnid).mkdir(parents=True)
            for i in range(2 if split == "train" else 4):
                Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(
                    tmp_path / "imagenet" / split / wnid / f"ILSVRC2012_{split}_{i:08d}.JPEG")
    with warnings.catch_warnings():  # a weights file in torchvision's layout (with the auxiliary heads)
        warnings.simplefilter("ignore")
        torch.save(torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).state_dict(),
                   tmp_path / "googlenet.pth")
    params["dataset"].update(root=str(tmp_path / "imagenet"), n_val=3, image_size=64, resize=72)
    params["models"]["googlenet"]["weights"] = str(tmp_path / "googlenet.pth")
    # every pruner and both schedules, each to one target (iterative in two steps)
    keep = ("unstructured-oneshot", "filters-iterative", "connections-oneshot")
    params["plans"] = {name: {**params["plans"][name], "targets": [0.5], "steps": 2} for name in keep}
    params["recipe"].update(epochs=1, batch_size=6)
    out = tmp_path / "out"
    lib.stage.run_notebook(ROOT / notebook, out, params, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test_acc"]) == {f"googlenet/{p}" for p in params["plans"]}
    assert set(metrics["test_acc"]["googlenet/filters-iterative"]) == {"0", "25", "50"}
    # before retraining: every step too, the dense model's being its own accuracy
    assert {run: set(acc) for run, acc in metrics["pruned_acc"].items()} == {
        run: set(acc) for run, acc in metrics["test_acc"].items()}
    assert all(acc["0"] == metrics["test_acc"][run]["0"] for run, acc in metrics["pruned_acc"].items())
    assert metrics["dense"]["googlenet"]["recorded_acc"] == pytest.approx(0.6978)
    for plan in params["plans"]:
        run = json.loads((out / "googlenet" / plan / "metrics.json").read_text())["checkpoints"]
        if params["plans"][plan].get("masking") == "regrowing":  # zeroed once: the weights grew back
            assert max(r["target"] for r in run.values()) == 0.5 and max(r["sparsity"] for r in run.values()) < 0.5
        else:
            assert max(r["sparsity"] for r in run.values()) == pytest.approx(0.5, abs=0.01)
    assert (out / "plots" / "accuracy.png").is_file() and (out / "plots" / "accuracy.csv").is_file()


@pytest.mark.parametrize("dataset, models, message", [
    ({"name": "cifar100", "root": "."}, {}, "unknown dataset"),
    ({"name": "cifar10", "root": ".", "shuffle": True}, {}, "no parameter"),
    ({"name": "imagenet"}, {}, "needs a 'root'"),
    ({"name": "cifar10", "root": "."}, {"r20": {"model": "cifar_resnet20", "weights": "missing.th"}}, "does not exist"),
    ({"name": "cifar10", "root": "."}, {"r20": {"model": "resnet20"}}, "unknown model"),
])
def test_grid_parameters_fail_before_any_compute(dataset, models, message):
    from lib.prune.runs import configure

    with pytest.raises((ValueError, FileNotFoundError), match=message):
        configure("r20", "p", "", None, {}, "out", "", dataset=dataset, models=models,
                  plans={"p": {"schedule": "oneshot", "targets": [0.5]}})
