"""Patch features (CNN maps, dilation, ViT q/k/v/tokens), input preparation and the checkpoint loop."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from lib.data.boxes import BoxDataset, load_shapes
from lib.discover import InputImages, PatchFeatures, dilate_last_stages, discover
from lib.models import create_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomise_batchnorm(model):
    """Non-trivial running statistics, so that eval-mode BatchNorm is not the identity."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


# ----------------------------------------------------------------------------- dilation
@pytest.mark.slow
def test_dilated_resnet50_equals_torchvisions_replace_stride_with_dilation():
    for factor, replace in [(2, [False, False, True]), (4, [False, True, True])]:
        model = randomise_batchnorm(torchvision.models.resnet50())
        reference = torchvision.models.resnet50(replace_stride_with_dilation=replace)
        reference.load_state_dict(model.state_dict())
        reference.eval()
        ours = dilate_last_stages(model, factor)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            np.testing.assert_allclose(ours(x), reference(x), rtol=1e-4, atol=1e-5)
        assert model.layer4[0].conv2.stride == (2, 2)  # the original is left untouched


def feature_map(model, layer, x):
    out = {}
    handle = layer.register_forward_hook(lambda m, i, o: out.setdefault("map", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["map"]


@pytest.mark.parametrize("factor", [2, 4])
def test_dilated_maps_sampled_every_factor_positions_equal_the_original(factor):
    """A trous: the dilated map is finer, and on the original grid it is the original map."""
    x = torch.randn(2, 3, 64, 64)
    resnet = randomise_batchnorm(torchvision.models.resnet18())
    dense, dilated = resnet, dilate_last_stages(resnet, factor)
    original = feature_map(dense, dense.layer4, x)
    fine = feature_map(dilated, dilated.layer4, x)
    assert fine.shape[-1] == factor * original.shape[-1]
    np.testing.assert_allclose(fine[..., ::factor, ::factor], original, rtol=1e-4, atol=1e-5)
    cnn = randomise_batchnorm(create_model("small_cnn", num_classes=10))
    original = feature_map(cnn, cnn.features[-1], x)
    wide = dilate_last_stages(cnn, factor)
    fine = feature_map(wide, wide.features[-1], x)
    assert original.shape[-1] == 8 and fine.shape[-1] == 8 * factor
    np.testing.assert_allclose(fine[..., ::factor, ::factor], original, rtol=1e-4, atol=1e-5)


def test_dilation_is_refused_where_not_implemented():
    with pytest.raises(ValueError, match="dilation"):
        dilate_last_stages(torchvision.models.mobilenet_v3_small(), 2)
    with pytest.raises(ValueError, match="1, 2 or 4"):
        dilate_last_stages(torchvision.models.resnet18(), 3)


# ----------------------------------------------------------------------------- patch features
def test_cnn_features_are_the_feature_layer_with_losts_layernorm():
    model = randomise_batchnorm(create_model("small_cnn", num_classes=10))
    x = torch.randn(3, 3, 64, 64)
    feats, grid = PatchFeatures(model, "small_cnn")(x)
    assert grid == (8, 8) and feats.shape == (3, 64, 128)
    raw = feature_map(model, model.features[-1], x).flatten(2).transpose(1, 2)
    expected = (raw - raw.mean((1, 2), keepdim=True)) / torch.sqrt(raw.var((1, 2), unbiased=False, keepdim=True) + 1e-5)
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)
    plain, _ = PatchFeatures(model, "small_cnn", layernorm=False)(x)
    np.testing.assert_allclose(plain, raw, rtol=1e-6)
    fine, grid = PatchFeatures(model, "small_cnn", dilation=2)(x)
    assert grid == (16, 16) and fine.shape == (3, 256, 128)
    assert PatchFeatures(model, "small_cnn").patch_size() == 8
    assert PatchFeatures(model, "small_cnn", dilation=2).patch_size() == 4


def qkv_like_lost(model, x):
    """LOST's own route: hook the last block's qkv and reshape (B, T, 3, heads, -1), heads concatenated."""
    out = {}
    handle = model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: out.setdefault("qkv", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    b, t, _ = out["qkv"].shape
    heads = model.blocks[-1].attn.num_heads
    qkv = out["qkv"].reshape(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return [part.transpose(1, 2).reshape(b, t, -1)[:, 1:] for part in qkv]


def test_timm_vit_keys_queries_values_and_tokens():
    model = create_model("small_vit", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    expected = dict(zip("qkv", qkv_like_lost(model, x)))
    for which in "qkv":
        feats, grid = PatchFeatures(model, "small_vit", which=which)(x)
        assert grid == (8, 8) and feats.shape == (2, 64, 96)
        np.testing.assert_allclose(feats, expected[which], rtol=1e-6)
    tokens, _ = PatchFeatures(model, "small_vit", which="tokens")(x)
    model.norm = torch.nn.Identity()
    with torch.no_grad():
        np.testing.assert_allclose(tokens, model.forward_features(x)[:, 1:], rtol=1e-5, atol=1e-6)


def test_torchvision_vit_keys_come_from_the_attention_projection():
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    block = model.encoder.layers[-1]
    captured = {}
    handle = block.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        model(x)
        handle.remove()
        q, k, v = torch.nn.functional.linear(block.ln_1(captured["x"]), block.self_attention.in_proj_weight,
                                             block.self_attention.in_proj_bias).chunk(3, dim=-1)
    feats, grid = PatchFeatures(model, "torchvision/vit_b_32", which="k")(x)
    assert grid == (4, 4)
    np.testing.assert_allclose(feats, k[:, 1:], rtol=1e-5, atol=1e-6)


def test_patch_features_reject_mismatched_options():
    cnn, vit = create_model("small_cnn", num_classes=10), create_model("small_vit", num_classes=10)
    with pytest.raises(ValueError, match="ViT features"):
        PatchFeatures(cnn, "small_cnn", which="k")
    with pytest.raises(ValueError, match="CNNs only"):
        PatchFeatures(vit, "small_vit", dilation=2)
    with pytest.raises(ValueError, match="which must be"):
        PatchFeatures(vit, "small_vit", which="keys")


# ----------------------------------------------------------------------------- inputs and the loop
def test_input_images_resize_pad_group_and_map_back():
    images = np.zeros((1, 48, 64, 3), np.uint8)
    data = BoxDataset("toy", ["a"], [np.array([[0, 0, 64, 48]], np.float32)], [["x"]], arrays=images)
    inputs = InputImages(data, multiple=32, resize=128)
    assert inputs.size(0) == (96, 128)
    assert list(inputs.groups) == [(96, 128)]
    np.testing.assert_allclose(inputs.to_original(0, [0, 0, 128, 96]), [0, 0, 64, 48])
    padded = InputImages(data, multiple=32)
    (indices, batch), = padded.batches((0.5,) * 3, (0.5,) * 3)
    assert batch.shape == (1, 3, 64, 64)
    assert (batch[0, :, :48] == -1).all() and (batch[0, :, 48:] == 0).all()  # black image, then zero padding


def test_discover_scores_every_checkpoint_and_keeps_every_image(tiny_shapes, pruned_source):
    data = load_shapes(tiny_shapes, "test").sample(6)
    source = pruned_source("small_cnn", targets=(0.5,))
    rows, per_image = discover(source, data, {"lost": {"k_patches": 10}, "tokencut": {}}, progress=False)
    assert [r["step"] for r in rows] == [0, 1] and rows[1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert rows[0]["grid"] == "8x8" and rows[0]["n_images"] == 6
    assert len(per_image) == 12 and set(per_image["image"]) == set(data.ids)
    for name in ("lost", "tokencut"):
        part = per_image[per_image["step"] == 0]
        assert rows[0][f"corloc_{name}"] == pytest.approx(part[f"hit_{name}"].mean())
        assert rows[0][f"miou_{name}"] == pytest.approx(part[f"iou_{name}"].mean())
        boxes = part[[f"{name}_{c}" for c in ("x0", "y0", "x1", "y1")]].to_numpy()
        assert (boxes % 8 == 0).all() and (boxes >= 0).all() and (boxes <= 64).all()  # whole 8-px patches


def test_discover_fails_fast_on_images_without_boxes(tiny_shapes, pruned_source):
    data = load_shapes(tiny_shapes, "test").subset([0, 1])
    data.boxes[1] = np.zeros((0, 4), np.float32)
    with pytest.raises(ValueError, match="with_boxes"):
        discover(pruned_source("small_cnn", targets=(0.5,)), data, progress=False)
    with pytest.raises(FileNotFoundError, match="prune stage"):
        discover("no/such/run", data, progress=False)


@pytest.mark.parametrize("variant", [[], ["variants.discover.tiny_imagenet"]])
def test_the_lite0_study_only_uses_parameters_the_notebook_knows(variant):
    from lib.stage import check_parameters, load_params

    sections = ["discover.common", "discover.lite0", *variant]  # COCO128, then Tiny ImageNet
    parameters = load_params(sections, ROOT / "presets" / "lite0.params.yaml")
    check_parameters(ROOT / "notebooks" / "04_discover.ipynb", {**parameters, "out_dir": "x"})
    assert parameters["dataset"]["name"] == ("tiny_imagenet" if variant else "coco")


@pytest.mark.slow
def test_diagnose_features_counts_positive_pairs_and_seeds_in_boxes(tiny_shapes, pruned_source):
    from lib.checkpoints import iter_checkpoints
    from lib.discover import LOST, diagnose_features

    data = load_shapes(tiny_shapes, "test").subset(range(4))
    source = pruned_source("small_cnn", targets=(0.5,))
    settings = {"lost": {}, "centred": {"centre": True}}
    torch.manual_seed(1)
    table = diagnose_features(source, data, settings, {"lost": {"k_patches": 7}}).set_index("features")
    torch.manual_seed(1)
    _, model = next(iter(iter_checkpoints(source)))  # the same dense checkpoint
    images = torch.stack([torch.as_tensor(data.image(i)).permute(2, 0, 1).float() / 255 for i in range(4)])
    images = (images - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for label, features in settings.items():
        feats, grid = PatchFeatures(model, "small_cnn", **features)(images)
        positive, inside = 0, 0
        for i in range(4):
            for a in range(64):
                positive += sum(float(feats[i, a] @ feats[i, b]) > 0 for b in range(64) if b != a)
            (found,) = LOST(7)(feats[i], grid)
            y, x = (found.seed // 8) * 8 + 4, (found.seed % 8) * 8 + 4  # the seed patch's centre in pixels
            x0, y0, x1, y1 = data.boxes[i][0]
            inside += bool(x0 <= x < x1 and y0 <= y < y1)
        assert table.loc[label, "positive_pairs"] == pytest.approx(positive / (4 * 64 * 63))
        assert table.loc[label, "lost_seed_in_box"] == inside / 4
