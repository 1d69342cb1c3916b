"""The faithful modes (the README's Protocol table) against the operations the two studies' released code calls.

Study B (torchvision GoogLeNet with its auxiliary heads): per-layer structured pruning equals
``torch.nn.utils.prune.ln_structured(n=1, dim=0)`` and global unstructured pruning equals
``prune.global_unstructured(L1Unstructured)`` over the same weights and biases; per-layer rates are exact in
every layer; the stem and the auxiliary heads stay untouched; regrowing connection sparsity grows back after a
training step, persistent sparsity does not. Study A: Q/K/V stay dense (torchvision's and timm's ViT), and the
red-channel mask differs from the foreground on a hand-built palette image. Plus the recipe's per-epoch
ExponentialLR and auxiliary loss weights, MIS unit sets and RQ3's accuracy aggregation.
"""

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn.utils import prune as torch_prune

from helpers import voc_palette
from lib.models import create_model
from lib.prune import PruningPlan, current_masks, prunable_parameters
from lib.prune.masks import copy_model

ROOT = Path(__file__).resolve().parents[1]
STUDY_B_EXCLUDE = ("conv1", "conv2", "conv3", "aux*")  # the stem and the auxiliary heads
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def googlenet():
    """torchvision's GoogLeNet as Study B builds it (aux_logits=True), randomly initialised, 10 classes."""
    torch.manual_seed(0)
    return torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, num_classes=10)


def _untouched(model, reference, patterns=STUDY_B_EXCLUDE):
    """Every tensor of the modules matching ``patterns`` is as in ``reference`` and carries no mask."""
    from lib.prune.masks import _excluded

    masks = current_masks(model)
    ref = dict(reference.named_parameters())
    for name, tensor in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if _excluded(owner, patterns):
            assert torch.equal(tensor, ref[name]), name
            assert name not in masks, name


@pytest.mark.slow
def test_study_b_structured_equals_ln_structured_per_layer(googlenet):
    model, reference = copy_model(googlenet), copy_model(googlenet)
    plan = PruningPlan(schedule="oneshot", pruner="filters", scope="layer", targets=(0.4,), layers=("conv",),
                       exclude=STUDY_B_EXCLUDE, filter_companions=False)
    params = plan.prunable(model, "torchvision/googlenet")
    assert not any(p.name.startswith(("conv1.", "conv2.", "conv3.", "aux")) for p in params)
    assert len(params) == 54  # the inception blocks' convolutions (9 blocks x 6) and nothing else
    plan.pruner_for(1).prune(model, params, 0.4, X)
    masks = current_masks(model)
    assert set(masks) == {p.key for p in params}  # batch norm untouched, as Study B's code leaves it
    ref_modules = dict(reference.named_modules())
    for p in params:
        ref = ref_modules[p.name]
        torch_prune.ln_structured(ref, "weight", amount=0.4, n=1, dim=0)
        assert torch.equal(masks[p.key], ref.weight_mask.bool()), p.name
        removed = int((~masks[p.key]).reshape(p.weight.shape[0], -1).all(1).sum())
        assert removed == round(0.4 * p.weight.shape[0]), p.name  # the rate is exact in every layer
    _untouched(model, googlenet)


@pytest.mark.slow
def test_study_b_structured_keeps_batch_norm_by_default_companions():
    """The repository's default masks the filter's batch-norm channel too (its output is then exactly zero)."""
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, num_classes=10)
    plan = PruningPlan(schedule="oneshot", pruner="filters", scope="layer", targets=(0.4,), layers=("conv",),
                       exclude=("conv1", "conv2", "conv3"))
    plan.pruner_for(1).prune(model, plan.prunable(model, "torchvision/googlenet"), 0.4, X)
    assert any(key.endswith("bn.weight") for key in current_masks(model))


@pytest.mark.slow
def test_study_b_global_unstructured_with_biases_equals_torch(googlenet):
    model, reference = copy_model(googlenet), copy_model(googlenet)
    plan = PruningPlan(schedule="oneshot", pruner="unstructured", scope="global", targets=(0.6,),
                       layers=("conv", "linear"), exclude=STUDY_B_EXCLUDE, exclude_classifier=False, include_bias=True)
    params = plan.prunable(model, "torchvision/googlenet")
    assert "fc.bias" in {p.key for p in params} and "fc.weight" in {p.key for p in params}
    plan.pruner_for(1).prune(model, params, 0.6, X)
    masks = current_masks(model)
    ref_modules = dict(reference.named_modules())
    pairs = [(ref_modules[p.name], p.param) for p in params]
    torch_prune.global_unstructured(pairs, pruning_method=torch_prune.L1Unstructured, amount=0.6)
    for p, (module, param) in zip(params, pairs):
        assert torch.equal(masks[p.key], getattr(module, f"{param}_mask").bool()), p.key
    total = sum(p.weight.numel() for p in params)
    assert sum(int((~masks[p.key]).sum()) for p in params) == round(0.6 * total)
    _untouched(model, googlenet)


def test_include_bias_is_for_unstructured_only():
    with pytest.raises(ValueError, match="include_bias"):
        PruningPlan(schedule="oneshot", pruner="filters", targets=(0.5,), include_bias=True)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8])
def test_study_b_connection_sparsity_counts_int_rate_channels_in_every_layer(googlenet, rate):
    model = copy_model(googlenet)
    plan = PruningPlan(schedule="oneshot", pruner="connections", selection="random", scope="layer", targets=(rate,),
                       layers=("conv",), exclude=STUDY_B_EXCLUDE, masking="regrowing", rounding="floor")
    params = plan.prunable(model, "torchvision/googlenet")
    plan.pruner_for(1).prune(model, params, rate, X)
    assert current_masks(model) == {}  # no mask: zeroed once
    for p in params:
        w = p.weight.detach()
        zero_inputs = int((w.movedim(1, 0).reshape(w.shape[1], -1) == 0).all(1).sum())
        assert zero_inputs == int(w.shape[1] * rate), p.name  # Study B's int(C_in x rate), every layer
    _untouched(model, googlenet)


@pytest.mark.slow
@pytest.mark.parametrize("masking", ["regrowing", "persistent"])
def test_regrowing_connections_grow_back_after_a_training_step_persistent_ones_do_not(masking):
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", 10)
    plan = PruningPlan(schedule="oneshot", pruner="connections", selection="random", scope="layer", targets=(0.4,),
                       layers=("conv",), exclude=("conv1",), masking=masking, rounding="floor")
    params = plan.prunable(model, "cifar_resnet20")
    assert "conv1" not in {p.name for p in params}  # the stem stays dense
    plan.pruner_for(1).prune(model, params, 0.4, torch.zeros(2, 3, 32, 32))
    zeroed = {p.name: (p.weight.detach().movedim(1, 0).reshape(p.weight.shape[1], -1) == 0).all(1) for p in params}
    assert all(z.sum() == int(0.4 * len(z)) for z in zeroed.values())
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    for p in params:
        regrown = p.weight.detach().movedim(1, 0)[zeroed[p.name]].abs().sum()
        if masking == "regrowing":
            assert regrown > 0, p.name
        else:
            assert regrown == 0, p.name


def _tiny_torchvision_vit():
    return torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2,
                                                hidden_dim=16, mlp_dim=32, num_classes=10)


def test_study_a_keeps_qkv_dense_torchvision_vit():
    torch.manual_seed(0)
    model = _tiny_torchvision_vit()
    plan = PruningPlan(schedule="lrr", rate=0.2, threshold=0.95, pruner="unstructured", layers=("conv", "linear"),
                       exclude_classifier=False, attention_qkv=False)
    params = plan.prunable(model, "torchvision/vit_b_32")
    assert not any(isinstance(p.module, nn.MultiheadAttention) for p in params)
    assert any(p.name.endswith("self_attention.out_proj") for p in params)  # out projection and MLPs are pruned
    assert {p.name for p in params} >= {"heads.head", "conv_proj"}
    plan.pruner_for(1).prune(model, params, 0.5)
    for block in model.encoder.layers:
        assert (block.self_attention.in_proj_weight != 0).all()
        assert (block.self_attention.out_proj.weight == 0).any()
    # the repository's default prunes the packed projection too
    default = PruningPlan(schedule="lrr", rate=0.2, threshold=0.95, pruner="unstructured", exclude_classifier=False)
    assert any(isinstance(p.module, nn.MultiheadAttention) for p in default.prunable(model, "torchvision/vit_b_32"))


def test_study_a_keeps_qkv_dense_timm_vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=16, embed_dim=16, depth=2, num_heads=2, num_classes=10)
    params = prunable_parameters(model, ("conv", "linear"), attention_qkv=False)
    names = {p.name for p in params}
    assert not any(n.endswith(".qkv") for n in names) and "blocks.0.attn.proj" in names
    assert "blocks.0.attn.qkv" in {p.name for p in prunable_parameters(model)}


def _palette_png(path, ids):
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)
    return path


def test_red_channel_mask_drops_classes_whose_colour_has_no_red(tmp_path):
    from lib.data.masks import read_class_map, read_red_channel, voc_foreground, voc_red_channel

    assert [tuple(voc_palette()[3 * c:3 * c + 3]) for c in (2, 4, 6)] == [(0, 128, 0), (0, 0, 128), (0, 128, 128)]
    ids = np.zeros((20, 30), np.uint8)
    ids[2:8, 2:10], ids[10:18, 5:15], ids[3:9, 18:28] = 2, 4, 6  # bicycle, boat, bus: red 0
    path = _palette_png(tmp_path / "no_red.png", ids)
    foreground, red = voc_foreground(read_class_map(path)), voc_red_channel(read_red_channel(path))
    assert foreground.sum() == (ids > 0).sum() and not red.any()  # the classes vanish from Study A's mask

    ids[10:18, 5:15] = 15  # a person (192, 128, 128) and a cat (64, 0, 0) beside the bicycle and the bus
    ids[2:8, 2:10] = 8
    ids[0, :] = 255  # a void outline (224, 224, 192): object in Study A's mask, not in the foreground
    path = _palette_png(tmp_path / "mixed.png", ids)
    foreground, red = voc_foreground(read_class_map(path)), voc_red_channel(read_red_channel(path))
    assert np.array_equal(red, (ids == 15) | (ids == 255))
    assert np.array_equal(foreground, (ids != 0) & (ids != 255))


def test_red_channel_mask_mode_of_the_voc_loader(tmp_path):
    from lib.data.masks import load_ground_truth

    voc = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    ids = np.zeros((40, 40), np.uint8)
    ids[5:20, 5:20], ids[22:38, 22:38] = 15, 12  # person (red 192) and dog (red 64)
    _palette_png(voc / "SegmentationClass" / "a.png", ids)
    Image.fromarray(np.full((40, 40, 3), 100, np.uint8)).save(voc / "JPEGImages" / "a.jpg")
    (voc / "ImageSets/Segmentation/val.txt").write_text("a\n")
    foreground = load_ground_truth("voc12", voc, image_size=40, mask="foreground")["masks"][0]
    red = load_ground_truth("voc12", voc, image_size=40, mask="red_channel")["masks"][0]
    assert np.array_equal(foreground, ids > 0) and np.array_equal(red, ids == 15)
    with pytest.raises(ValueError, match="mask"):
        load_ground_truth("voc12", voc, image_size=40, mask="green_channel")


def test_exponential_lr_per_epoch_is_exponential_lr_stepped_each_epoch():
    from lib.train import Recipe, build_optimizer, build_scheduler

    recipe = Recipe(epochs=4, lr=0.01, schedule="exponential", gamma=0.9, schedule_interval="epoch")
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=3)
    reference_opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.01)
    reference = torch.optim.lr_scheduler.ExponentialLR(reference_opt, gamma=0.9)
    for epoch in range(recipe.epochs):
        for _ in range(3):
            assert math.isclose(optimizer.param_groups[0]["lr"], reference_opt.param_groups[0]["lr"], rel_tol=1e-12)
            optimizer.step()
            scheduler.step()
        reference_opt.step()
        reference.step()
    # the default moves the rate smoothly, a factor gamma per epoch
    smooth = Recipe(epochs=4, lr=0.01, schedule="exponential", gamma=0.9)
    optimizer = build_optimizer(model, smooth)
    scheduler = build_scheduler(optimizer, smooth, steps_per_epoch=3)
    optimizer.step()
    scheduler.step()
    assert math.isclose(optimizer.param_groups[0]["lr"], 0.01 * 0.9 ** (1 / 3))


@pytest.mark.slow
def test_googlenet_trains_its_auxiliary_heads_with_weight_0_3(googlenet):
    from lib.train.loop import _logits_and_loss

    model = copy_model(googlenet).train()
    y = torch.tensor([1, 2])
    outputs = model(X)
    main, aux2, aux1 = outputs.logits, outputs.aux_logits2, outputs.aux_logits1
    criterion = nn.CrossEntropyLoss()
    _, loss = _logits_and_loss(outputs, y, criterion, 0.3)
    expected = criterion(main, y) + 0.3 * criterion(aux1, y) + 0.3 * criterion(aux2, y)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert model.aux1.fc2.weight.grad.abs().sum() > 0  # the heads are trained
    assert isinstance(model.eval()(X), torch.Tensor)  # evaluation: the main logits only


def test_mis_unit_sets(googlenet):
    from lib.mis.activations import constant_units, default_layers, resolve_layers

    blocks = resolve_layers(googlenet, "torchvision/googlenet", "block_outputs")
    assert blocks == default_layers(googlenet, "torchvision/googlenet")
    assert not any(b.startswith("aux") for b in blocks)  # not run in evaluation
    convs = resolve_layers(googlenet, "torchvision/googlenet", "conv_channels")
    assert convs[-1] == "logits" and convs[0] == "conv1.conv"
    assert len(convs) - 1 == 3 + 9 * 6 and not any(c.startswith("aux") for c in convs)
    assert all(isinstance(googlenet.get_submodule(c), nn.Conv2d) for c in convs[:-1])  # before batch norm
    with pytest.raises(ValueError, match="unit set"):
        resolve_layers(googlenet, "torchvision/googlenet", "channels")
    # a pruned filter's unit is constant over the images, so it is dropped before averaging
    model = copy_model(googlenet).eval()
    conv = model.inception3a.branch1.conv
    with torch.no_grad():
        conv.weight[:5] = 0
    captured = {}
    handle = conv.register_forward_hook(lambda m, i, o: captured.update(out=o.mean((2, 3)).T))
    model(torch.randn(6, 3, 64, 64))
    handle.remove()
    constant = constant_units(captured["out"])
    assert constant[:5].all() and not constant[5:].any()


def test_accuracy_over_all_images_includes_the_control_condition():
    from lib.align.metrics import checkpoint_rows

    rows = []
    for condition, correct in (("cr", [1, 1, 1, 1]), ("bw", [1, 0, 0, 0])):  # colour: "cr" is the control
        for i, c in enumerate(correct):
            rows.append({"step": 0, "dataset": "colour", "condition": condition, "image_id": f"{condition}{i}",
                         "category": "cat", "object_response": "cat" if c else "dog"})
    trials, records = pd.DataFrame(rows), [{"step": 0, "sparsity": 0.0}]
    assert checkpoint_rows(records, trials)[0]["acc/colour"] == 0.25  # the benchmark's aggregation
    assert checkpoint_rows(records, trials, accuracy_over="all_images")[0]["acc/colour"] == 5 / 8  # Study A's
    row = checkpoint_rows(records, trials)[0]  # Study A's value is in every row beside the chosen one
    assert row["acc_all_images/colour"] == row["ood_acc_all_images"] == 5 / 8 and row["ood_acc"] == 0.25
    with pytest.raises(ValueError, match="accuracy_over"):
        checkpoint_rows(records, trials, accuracy_over="conditions")


def test_masks_module_does_not_import_methods():
    tree = ast.parse((ROOT / "lib" / "prune" / "masks.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(name and name.startswith("lib.prune") for name in imported)
