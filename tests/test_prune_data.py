"""Real-data inputs of the pruning presets: CIFAR-10 and ImageNet-layout loaders, the CIFAR ResNets."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from lib.data import cifar10, imagenet
from lib.storage import load_torch
from lib.models import create_model, get_spec
from lib.models.cifar_resnet import PadShortcut
from lib.train import evaluate


def write_images(folder, classes, per_class, size, suffix):
    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (size[0] + (i if suffix != ".png" else 0), size[1], 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / c / f"{i:03d}{suffix}")


def test_cifar10_folder_split_is_stratified_disjoint_and_seeded(tmp_path):
    write_images(tmp_path, ["cat", "airplane", "dog"], 4, (32, 32), ".png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = cifar10.load(tmp_path)
    assert data["classes"] == ["airplane", "cat", "dog"] and len(data["images"]) == 12
    assert data["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    retrain, test = cifar10.split(data["labels"], 0.5, seed=3)
    assert len(set(retrain) | set(test)) == 12 and not set(retrain) & set(test)
    assert np.bincount(data["labels"][retrain]).tolist() == [2, 2, 2]
    assert np.array_equal(cifar10.split(data["labels"], 0.5, seed=3)[0], retrain)
    assert not np.array_equal(cifar10.split(data["labels"], 0.5, seed=4)[0], retrain)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cifar10.load(tmp_path / "missing")


def test_cifar10_monitoring_split_is_stratified_and_seeded(tmp_path):
    labels = np.repeat([0, 1, 2, 3], [50, 30, 15, 5])
    pick = cifar10.stratified_subset(labels, 20, seed=1)
    assert len(pick) == 20 and len(set(pick)) == 20 and np.all(np.diff(pick) > 0)
    assert np.bincount(labels[pick]).tolist() == [10, 6, 3, 1]  # proportional
    assert np.array_equal(cifar10.stratified_subset(labels, 20, seed=1), pick)
    assert not np.array_equal(cifar10.stratified_subset(labels, 20, seed=2), pick)
    assert np.bincount(labels[cifar10.stratified_subset(labels, 5, seed=0)]).tolist() == [2, 1, 1, 1]  # all present
    assert len(cifar10.stratified_subset(labels, 1000)) == 100
    write_images(tmp_path, ["cat", "airplane", "dog"], 6, (32, 32), ".png")
    data = cifar10.datasets(tmp_path, (0.5,) * 3, (0.25,) * 3, retrain_share=0.5, seed=0, n_val=3, augment=False)
    assert sorted(int(label) for _, label in data["val"]) == [0, 1, 2]  # the test part's first 3 are one class


def test_imagenet_layout_stand_in(tmp_path):
    write_images(tmp_path / "val", ["n02", "n01", "n03"], 5, (70, 90), ".JPEG")
    found = imagenet.scan(tmp_path)
    assert found["classes"] == ["n01", "n02", "n03"] and len(found["files"]) == 15
    data = imagenet.datasets(tmp_path, (0.5,) * 3, (0.25,) * 3, retrain_per_class=2, test_per_class=2, n_val=3,
                             image_size=48, resize=56)
    assert len(data["train"]) == 6 and len(data["test"]) == 6 and len(data["val"]) == 3
    assert {str(f) for f in data["train"].files}.isdisjoint(str(f) for f in data["test"].files)
    image, label = data["train"][0]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and int(label) == 0
    raw = np.asarray(Image.open(data["train"].files[0]).convert("RGB"), dtype=np.float32) / 255
    assert float(image.mean()) == pytest.approx((raw.mean() - 0.5) / 0.25, abs=0.2)  # normalised with mean/std
    with pytest.raises(ValueError, match="fewer than"):
        imagenet.split(found["labels"], 4, 2)
    with pytest.raises(FileNotFoundError, match="standard layout"):
        imagenet.scan(tmp_path, "train")


def test_option_a_shortcut_equals_the_padding_reference():
    x = torch.randn(2, 16, 8, 8)
    reference = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8), "constant", 0)  # akamaster's LambdaLayer
    assert torch.equal(PadShortcut(16, 32)(x), reference)


@pytest.fixture(scope="module")
def cifar_test(shared_data):
    return cifar10.load(shared_data / "cifar10" / "test")


def test_cifar10_test_split(cifar_test):
    assert cifar_test["images"].shape == (10000, 32, 32, 3)
    assert cifar_test["classes"] == list(cifar10.CLASSES)
    retrain, test = cifar10.split(cifar_test["labels"])
    assert len(retrain) == len(test) == 5000 and np.bincount(cifar_test["labels"][test]).tolist() == [500] * 10
    val = cifar10.stratified_subset(cifar_test["labels"][test], 500, seed=0)
    assert np.bincount(cifar_test["labels"][test][val]).tolist() == [50] * 10


@pytest.mark.parametrize("name, file", [("cifar_resnet20", "resnet20-12fca82f.th"), ("cifar_resnet56", "resnet56-4bfd9763.th")])
def test_pretrained_cifar_resnets_load_and_classify(shared_data, cifar_test, name, file):
    from lib.data.transforms import ArrayDataset

    path = shared_data / "cifar10" / "pretrained" / file
    state = {k.removeprefix("module."): v for k, v in load_torch(path)["state_dict"].items()}
    model = create_model(name, 10)
    assert set(state) == {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    model = create_model(name, 10, weights=path).eval()
    spec = get_spec(name)
    sample = np.arange(0, 10000, 25)  # 400 images, 40 per class
    data = ArrayDataset(cifar_test["images"][sample], cifar_test["labels"][sample], spec.mean, spec.std)
    assert evaluate(model, data) > 0.85


def test_pad_crop_flip_pads_with_black_pixels():
    from lib.data.transforms import ArrayDataset

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    image = np.zeros((1, 8, 8, 3), np.uint8)
    image[0, :, :4] = 255  # left half white, right half black
    augmented = cifar10.PadCropFlip(ArrayDataset(image, np.zeros(1), mean, std), mean, std, pad=4)
    black = torch.tensor([-m / s for m, s in zip(mean, std)]).view(3, 1, 1)
    white = torch.tensor([(1 - m) / s for m, s in zip(mean, std)]).view(3, 1, 1)
    torch.manual_seed(0)
    white_counts = set()
    for _ in range(30):
        x, _ = augmented[0]
        assert x.shape == (3, 8, 8)
        is_white, is_black = (x == white).all(0), (x == black).all(0)
        assert (is_white | is_black).all()  # padding is black pixels, nothing else appears
        white_counts.add(int(is_white.sum()))
    assert len(white_counts) > 3 and max(white_counts) == 32  # random shifts; never more than the white half
