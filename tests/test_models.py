import pytest
import torch

from lib import storage
from lib.models import create_model, get_layer, get_spec, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", ["small_cnn", "small_vit"])
def test_small_models_run_at_64px(name):
    model = create_model(name, num_classes=10)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    spec = get_spec(name)
    assert get_layer(model, spec.cam_layer) is not None and get_layer(model, spec.classifier) is not None


def test_external_names_build_without_download():
    model = create_model("torchvision/resnet18", num_classes=7)
    assert model.fc.out_features == 7
    assert get_spec("torchvision/resnet18").cam_layer == "layer4"
    assert create_model("timm/resnet10t", num_classes=3).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_unknown_model_names_the_alternatives():
    with pytest.raises(ValueError, match="available"):
        create_model("resnet9000")
    with pytest.raises(ValueError, match="torchvision"):
        create_model("torchvision/not_a_model")


def test_checkpoint_round_trip_keeps_weights_masks_and_meta(tmp_path):
    model = create_model("small_cnn", num_classes=10)
    mask = torch.rand_like(model.fc.weight) > 0.5
    save_checkpoint(tmp_path / "m.pt", model, "small_cnn", 10, {}, masks={"fc.weight": mask}, step=3)
    loaded, info = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(info["masks"]["fc.weight"], mask) and info["meta"]["step"] == 3


def test_corrupted_or_foreign_checkpoints_are_explained(tmp_path):
    model = create_model("small_cnn", num_classes=10)
    save_checkpoint(tmp_path / "m.pt", model, "small_cnn", 10)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(storage.CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(storage.CheckpointError, match="not a checkpoint of this library"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(storage.CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_local_weights_file_is_loaded(tmp_path):
    model = create_model("small_cnn", num_classes=10)
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    other = create_model("small_cnn", num_classes=10, weights=tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_efficientnet_lite0_ships_imagenet_weights():
    model = create_model("efficientnet_lite0", pretrained=True)
    assert model._fc.out_features == 1000
    assert get_spec("efficientnet_lite0").mean == (0.498, 0.498, 0.498)
