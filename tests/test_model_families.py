"""Study A's architectures through every analysis: timm ViTs (attention maps, any input size) and torchvision's
Swin (feature maps laid out (N, H, W, C)), the attributions that apply to each model, and fast checkpoint loading."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lib.interpret.methods import Attributor, create_attribution, default_attributions
from lib.interpret.metrics import relevance_map
from lib.data.image_pool import ImagePool
from lib.data.transforms import normalize, to_tensor
from lib.discover.features import PatchFeatures
from lib.mis import default_layers, unit_activations
from lib.models import create_model, get_layer, get_spec, load_checkpoint, register_model, save_checkpoint

SWIN, VIT = "torchvision/swin_v2_t", "timm/vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return create_model(SWIN, num_classes=10).eval()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model(VIT, num_classes=10, dynamic_img_size=True).eval()


def test_specs_name_layers_that_exist(swin, vit):
    spec = get_spec(SWIN)
    layers = (spec.family, spec.cam_layer, spec.feature_layer, spec.classifier)
    assert layers == ("cnn", "permute", "features.-1", "head")
    assert spec.nhwc("features.3") and spec.nhwc("norm") and not spec.nhwc("permute") and not spec.nhwc("head")
    spec = get_spec(VIT)
    layers = (spec.family, spec.cam_layer, spec.feature_layer, spec.classifier)
    assert layers == ("vit", "blocks.-1", "blocks.-1", "head")
    for model, spec in ((swin, get_spec(SWIN)), (vit, get_spec(VIT))):
        for layer in (spec.cam_layer, spec.feature_layer, spec.classifier):
            assert isinstance(get_layer(model, layer), nn.Module)
    assert not get_spec("torchvision/resnet50").nhwc_modules


def test_default_attributions_are_those_that_apply(swin, vit):
    resnet = create_model("torchvision/resnet18", num_classes=10)
    googlenet = create_model("torchvision/googlenet", num_classes=10, aux_logits=False, init_weights=False)
    tv_vit = create_model("torchvision/vit_b_32", num_classes=10)
    assert default_attributions(resnet, get_spec("torchvision/resnet18")) == [
        "gradcam", "guided_gradcam", "ig_smoothgrad", "saliency"]
    assert default_attributions(vit, get_spec(VIT)) == ["gradcam", "ig_smoothgrad", "saliency", "attention", "rollout"]
    # Swin V2 has a ReLU, in its position-bias MLP, off the path through the image: no guided backprop
    assert any(isinstance(m, nn.ReLU) for m in swin.modules())
    assert default_attributions(swin, get_spec(SWIN)) == ["gradcam", "ig_smoothgrad", "saliency"]
    assert default_attributions(googlenet, get_spec("torchvision/googlenet")) == ["gradcam", "ig_smoothgrad", "saliency"]
    assert default_attributions(tv_vit, get_spec("torchvision/vit_b_32")) == ["gradcam", "ig_smoothgrad", "saliency"]
    with pytest.raises(ValueError, match="drop it from the attributions"):
        create_attribution("guided_gradcam", swin, get_spec(SWIN))


@pytest.mark.slow
def test_swin_gradcam_matches_pytorch_grad_cam_on_its_last_stage(swin):
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    raw = create_attribution("gradcam", swin, get_spec(SWIN)).attribute(x)
    assert raw.shape == (2, 2, 2)  # the stride-32 map of the last stage
    ours = relevance_map(raw, "cam", size=(64, 64))
    target = swin(x).argmax(1)
    reference = ReferenceGradCAM(swin, [swin.norm], reshape_transform=lambda t: t.permute(0, 3, 1, 2))(
        x, targets=[ClassifierOutputTarget(int(t)) for t in target])  # pytorch_grad_cam's Swin recipe
    assert np.abs(ours.numpy() - reference).max() < 1e-4


def test_timm_vit_maps_follow_the_input_size(vit):
    spec = get_spec(VIT)
    attributions = [create_attribution(name, vit, spec) for name in ("gradcam", "attention", "rollout")]
    for size in (64, 96):
        _, maps = Attributor(attributions).attribute(torch.randn(2, 3, size, size))
        assert {name: tuple(m.shape) for name, m in maps.items()} == {
            name: (2, size // 16, size // 16) for name in ("gradcam", "attention", "rollout")}


@pytest.mark.slow
def test_swin_patch_features_are_its_last_stage_with_losts_layernorm(swin):
    x = torch.randn(2, 3, 64, 96)
    feats, grid = PatchFeatures(swin, SWIN)(x)
    with torch.no_grad():
        stage = swin.features(x)  # (B, h, w, C)
    assert grid == (2, 3) and feats.shape == (2, 6, 768)
    raw = stage.flatten(1, 2)  # row-major patches
    expected = (raw - raw.mean((1, 2), keepdim=True)) / torch.sqrt(raw.var((1, 2), unbiased=False, keepdim=True) + 1e-5)
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)
    assert PatchFeatures(swin, SWIN).patch_size() == 32


def test_swin_units_are_channel_means_of_its_stages(swin):
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    pool, spec = ImagePool(images, [str(i) for i in range(5)]), get_spec(SWIN)
    layers = default_layers(swin, SWIN)
    assert layers == [f"features.{i}" for i in range(8)] + ["logits", "softmax"]
    acts = unit_activations(swin, pool, ["features.3", "logits"], spec.mean, spec.std,
                            nhwc_layers=[layer for layer in layers if spec.nhwc(layer)])
    x = normalize(to_tensor(images), spec.mean, spec.std)
    with torch.no_grad():
        expected = swin.features[:4](x).mean((1, 2))  # (B, H, W, C): the channels are the last axis
    torch.testing.assert_close(acts["features.3"], expected.T)
    assert acts["features.3"].shape == (192, 5) and acts["logits"].shape == (10, 5)


@pytest.mark.parametrize("name, kwargs", [(SWIN, {}), (VIT, {"dynamic_img_size": True}), ("small_cnn", {})])
def test_checkpoints_load_to_the_same_model(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs).eval()
    save_checkpoint(tmp_path / "m.pt", model, name, 10, kwargs)
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(torch.rand(1), before)  # built without a random initialisation
    assert not loaded.training and all(not t.is_meta for t in loaded.state_dict().values())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


class _WithScratchBuffer(nn.Module):
    """A buffer that is not saved (persistent=False): a model the fast path cannot rebuild from its state."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)
        self.register_buffer("scale", torch.full((4,), 2.0), persistent=False)

    def forward(self, x):
        return self.fc(x * self.scale)


register_model("test_with_scratch_buffer")(_WithScratchBuffer)


def test_models_with_unsaved_buffers_load_the_ordinary_way(tmp_path):
    model = create_model("test_with_scratch_buffer", num_classes=10).eval()
    save_checkpoint(tmp_path / "m.pt", model, "test_with_scratch_buffer", 10)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(loaded.scale, torch.full((4,), 2.0))
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded(x), model(x))


def test_report_skips_a_metric_undefined_on_the_dense_model(tmp_path):
    from lib.report import load_dimensions, sweet_spot_table
    from lib.results import save_stage_metrics

    rows = [{"step": s, "sparsity": s * 0.2, "test_acc": 0.5} for s in range(3)]
    save_stage_metrics(tmp_path / "prune" / "a" / "m", rows, plot="accuracy", arch="a", plan="m")
    per_image = pd.DataFrame({"step": np.repeat([0, 1, 2], 4), "image": np.tile(list("wxyz"), 3),
                              "rma_gradcam": np.linspace(0.2, 0.8, 12),
                              "rma_guided_gradcam": [np.nan] * 4 + list(np.linspace(0.3, 0.6, 8))})
    save_stage_metrics(tmp_path / "interpret" / "a" / "m",
                       [{**r, "rma_gradcam": 0.5, "rma_guided_gradcam": None if r["step"] == 0 else 0.4} for r in rows],
                       plot="scores", per_image=per_image, arch="a", plan="m")
    frame, columns = load_dimensions(tmp_path)
    spots = sweet_spot_table(tmp_path, frame, columns, n_resamples=50).set_index("metric")
    assert spots["p_value"].dropna().index.tolist() == ["rma_gradcam"]  # no dense reference for the guided maps
    assert "undefined on the dense model" in spots.loc["rma_guided_gradcam", "verdict"]
