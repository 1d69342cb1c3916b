"""Paper-scale training inputs: ImageNet's train/val splits with the training transform on the decoded image,
a train stage that takes pretrained weights as they are, and per-architecture changes to a plan."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lib.data import imagenet
from lib.models import create_model, get_spec, load_checkpoint, save_checkpoint
from lib.data.datasets import check_dataset, classification_data
from lib.prune.runs import run_pruning
from lib.train import Recipe, evaluate, train_classifier

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
WNIDS = ("n01440764", "n01443537", "n01484850")


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """ILSVRC2012 layout: root/train/<wnid>/*.JPEG (5 per class), root/val/<wnid>/*.JPEG (4 per class)."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("val", 4)):
        for label, wnid in enumerate(WNIDS):
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 60, (60 + 6 * i, 80, 3), dtype=np.uint8)
                image[..., label] += 180  # a class-coloured image, so that a model can learn something
                Image.fromarray(image).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=95)
    return root


def test_train_split_trains_on_train_and_tests_on_all_of_val(imagenet_root):
    data = imagenet.datasets(imagenet_root, MEAN, STD, train_split="train", n_val=5, image_size=32, resize=36, seed=1)
    assert len(data["train"]) == 15 and len(data["test"]) == 12 and len(data["val"]) == 5
    assert all("/train/" in str(f) for f in data["train"].files) and all("/val/" in str(f) for f in data["test"].files)
    assert set(map(str, data["val"].files)) <= set(map(str, data["test"].files))  # monitoring only
    again = imagenet.datasets(imagenet_root, MEAN, STD, train_split="train", n_val=5, image_size=32, resize=36, seed=1)
    assert list(map(str, again["val"].files)) == list(map(str, data["val"].files))  # seeded
    assert data["train"].labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 and data["classes"] == list(WNIDS)
    with pytest.raises(ValueError, match="leave them out"):
        imagenet.datasets(imagenet_root, MEAN, STD, train_split="train", retrain_per_class=2)


def test_train_and_test_splits_must_have_the_same_classes(imagenet_root, tmp_path):
    for split, wnids in (("train", WNIDS), ("val", WNIDS[:2])):
        for wnid in wnids:
            (tmp_path / split / wnid).mkdir(parents=True)
            Image.new("RGB", (40, 40)).save(tmp_path / split / wnid / "a.JPEG")
    with pytest.raises(ValueError, match="same class folders"):
        imagenet.datasets(tmp_path, MEAN, STD, train_split="train")


def test_augment_is_a_random_resized_crop_and_flip_of_the_decoded_image(imagenet_root):
    from torchvision.transforms import v2

    data = imagenet.datasets(imagenet_root, MEAN, STD, train_split="train", image_size=32, resize=36, augment=True)
    torch.manual_seed(5)
    image, label = data["train"][7]
    reference = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(MEAN), list(STD))])
    torch.manual_seed(5)
    with Image.open(data["train"].files[7]) as decoded:  # the whole photo, not a centre crop of it
        expected = reference(decoded.convert("RGB"))
    assert image.shape == (3, 32, 32) and int(label) == 1
    torch.testing.assert_close(image, expected)
    torch.manual_seed(6)
    assert not torch.equal(data["train"][7][0], image)  # random per draw
    torch.manual_seed(5)
    test_a, _ = data["test"][0]
    torch.manual_seed(6)
    torch.testing.assert_close(data["test"][0][0], test_a)  # evaluation images are never augmented


def test_pruning_data_and_validation_take_the_new_keys(imagenet_root):
    dataset = {"name": "imagenet", "root": str(imagenet_root), "train_split": "train", "split": "val", "n_val": 3,
               "image_size": 32, "resize": 36, "augment": True, "seed": 0}
    check_dataset(dataset)
    data = classification_data(dataset, MEAN, STD)
    assert (len(data["train"]), len(data["test"]), data["image_size"]) == (15, 12, 32)
    assert data["id"]["train_split"] == "train"
    with pytest.raises(ValueError, match="no parameter"):
        check_dataset({**dataset, "num_classes": 1000})


@pytest.mark.slow
def test_train_classifier_on_the_imagenet_layout(imagenet_root, tmp_path):
    dataset = {"name": "imagenet", "root": str(imagenet_root), "train_split": "train", "n_val": 3, "image_size": 32,
               "resize": 36, "augment": True, "num_classes": 1000}
    recipe = Recipe(epochs=2, batch_size=5, lr=0.05, augment=(), seed=0)
    result = train_classifier("small_cnn", None, recipe, tmp_path, model_kwargs={"widths": (4, 8, 8, 8)},
                              dataset=dataset, progress=False)
    model, info = load_checkpoint(tmp_path / "model.pt")
    assert info["model"]["num_classes"] == 1000 and [h["epoch"] for h in result["history"]] == [1, 2]
    test = imagenet.datasets(imagenet_root, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), train_split="train",
                             image_size=32, resize=36)["test"]
    assert result["test_acc"] == pytest.approx(evaluate(model, test))  # scored on all of val
    assert (tmp_path / "dvclive" / "plots" / "metrics" / "val_acc.tsv").is_file()


def test_pretrained_weights_are_taken_as_they_are_with_zero_epochs(imagenet_root, tmp_path):
    torch.manual_seed(0)
    source = create_model("small_cnn", num_classes=1000, widths=(4, 8, 8, 8))
    state = {**source.state_dict(), "aux1.fc.weight": torch.zeros(2, 2)}  # a head the model does not have
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "weights.pth")
    dataset = {"name": "imagenet", "root": str(imagenet_root), "split": "val", "retrain_per_class": 2,
               "test_per_class": 2, "n_val": 3, "image_size": 32, "resize": 36, "num_classes": 1000}
    pretrained = {"weights": str(tmp_path / "weights.pth"), "drop_keys": ["aux1."], "recorded_acc": 0.5}
    result = train_classifier("small_cnn", None, Recipe(epochs=0), tmp_path / "out", dataset=dataset,
                              model_kwargs={"widths": [4, 8, 8, 8]}, pretrained=pretrained, progress=False)
    model, info = load_checkpoint(tmp_path / "out" / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    assert info["meta"]["recorded_acc"] == 0.5 and result["epochs"] == 0 and result["recorded_acc"] == 0.5
    assert [set(h) for h in result["history"]] == [{"epoch", "train_acc", "val_acc"}]
    spec = get_spec("small_cnn")
    test = classification_data({k: v for k, v in dataset.items() if k != "num_classes"}, spec.mean, spec.std)["test"]
    assert result["test_acc"] == pytest.approx(evaluate(source.eval(), test))
    assert (tmp_path / "out" / "dvclive" / "plots" / "metrics" / "train_acc.tsv").is_file()  # the DVC plot exists
    with pytest.raises(ValueError, match="trains nothing"):
        train_classifier("small_cnn", None, Recipe(epochs=0), tmp_path / "x", dataset=dataset)
    with pytest.raises(ValueError, match="pretrained takes"):
        train_classifier("small_cnn", None, Recipe(epochs=0), tmp_path / "x", dataset=dataset,
                         pretrained={"file": "weights.pth"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_classifier("small_cnn", None, Recipe(epochs=0), tmp_path / "x", dataset=dataset,
                         pretrained={"weights": str(tmp_path / "missing.pth")})


def test_zero_epochs_are_a_valid_recipe_but_warm_up_needs_epochs():
    assert Recipe(epochs=0).epochs == 0
    with pytest.raises(ValueError, match="warmup_epochs"):
        Recipe(epochs=0, warmup_epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        Recipe(epochs=-1)


@pytest.mark.slow
def test_plan_overrides_change_the_methods_plan_for_one_architecture(tiny_shapes, tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "train" / "model.pt", create_model("small_cnn", num_classes=10, widths=(4, 8, 8, 8)),
                    "small_cnn", 10, {"widths": (4, 8, 8, 8)})
    plan = {"schedule": "lrr", "rate": 0.2, "threshold": 0.2, "layers": ["conv", "linear"], "exclude_classifier": False}
    recipe = {"epochs": 1, "batch_size": 32, "seed": 0}
    results = run_pruning("cnn", "lrr", str(tmp_path / "train"), plan, recipe, str(tmp_path / "prune"),
                          str(tiny_shapes), plan_overrides={"threshold": 0.36, "layers": ["conv"]}, progress=False)
    manifest = json.loads((tmp_path / "prune" / "pruning.json").read_text())
    assert [round(r["sparsity"], 2) for r in results["rows"]] == [0.0, 0.2, 0.36]
    assert manifest["plan"]["threshold"] == 0.36 and manifest["plan"]["layers"] == ["conv"]
    assert "fc" not in manifest["checkpoints"][-1]["accounting"]["per_layer"]  # the plan would prune it
    with pytest.raises(ValueError, match="unknown pruning parameter"):
        run_pruning("cnn", "lrr", str(tmp_path / "train"), plan, recipe, str(tmp_path / "p2"), str(tiny_shapes),
                    plan_overrides={"treshold": 0.5}, progress=False)
