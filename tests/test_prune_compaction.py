"""Accounting (MACs by hand and against torch-pruning's counter) and compaction: physically smaller
models that compute what the masked ones do, residual and concatenation couplings respected, saved and
rebuilt without pickled modules."""

import warnings

import pytest
import torch
from torch import nn

from lib.models import create_model
from lib.prune import (CompactionError, accounting, compact, fold_masks, get_pruner, layer_macs, load_compacted,
                       prunable_parameters, save_compacted)
from lib.prune.masks import apply_masks, copy_model


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a forgotten batch-norm shift shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def assert_same_function(masked: nn.Module, compacted: nn.Module, size: int):
    x = torch.randn(4, 3, size, size)
    reference = copy_model(masked).eval()
    fold_masks(reference)
    with torch.no_grad():
        torch.testing.assert_close(compacted.eval()(x), reference(x), rtol=1e-4, atol=1e-4)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_macs_by_hand_and_against_torch_pruning():
    import torch_pruning as tp

    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.Conv2d(4, 3, 1, bias=False), nn.Flatten(),
                          nn.Linear(48, 2, bias=False))
    x = torch.zeros(1, 2, 4, 4)
    macs = layer_macs(model, x)
    assert macs["0"]["macs"] == 16 * 4 * 2 * 9 and macs["1"]["macs"] == 16 * 3 * 4 and macs["3"]["macs"] == 96
    assert sum(m["macs"] for m in macs.values()) == tp.utils.count_ops_and_params(model, x)[0]
    with torch.no_grad():
        model[1].weight[:, :2] = 0
    assert layer_macs(model, x)["1"]["nonzero_macs"] == 16 * 3 * 2


def test_accounting_of_filter_pruning():
    model = randomise_batch_norms(create_model("small_cnn", 10))
    x = torch.zeros(2, 3, 64, 64)
    params = prunable_parameters(model, exclude=("fc",))
    get_pruner("filters", scope="layer").prune(model, params, 0.5, x)
    fold_masks(model)
    acct = accounting(model, params, x)
    assert [v["filters_removed"] for v in acct["per_layer"].values()] == [8, 16, 32, 32, 64, 64]
    assert acct["sparsity"] == pytest.approx(0.5)
    assert acct["macs"] == sum(m["macs"] for m in layer_macs(model, x).values())
    assert acct["compacted_macs"] < acct["nonzero_macs"] < acct["macs"]  # compacting also drops the next layers' inputs
    assert acct["removed_share"] == pytest.approx(1 - acct["compacted_params"] / acct["params"])


@pytest.mark.parametrize("pruner", ["filters", "connections"])
def test_small_cnn_compacts_every_emptied_channel(pruner):
    model = randomise_batch_norms(create_model("small_cnn", 10))
    x = torch.zeros(2, 3, 64, 64)
    get_pruner(pruner, scope="layer").prune(model, prunable_parameters(model, exclude=("fc",)), 0.5, x)
    small = compact(model, x)
    assert_same_function(model, small, 64)
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    if pruner == "filters":
        assert [c.out_channels for c in convs] == [8, 16, 32, 32, 64, 64]
    else:  # a conv that lost half its inputs takes the producing filters with it
        assert [c.in_channels for c in convs] == [3, 8, 16, 32, 32, 64]
    assert n_params(small) < n_params(model) * 0.6


def test_residual_channel_goes_only_when_every_producer_lost_it(tmp_path):
    model = randomise_batch_norms(create_model("cifar_resnet20", 10))
    stage1_producers = [("conv1", "bn1")] + [(f"layer1.{b}.conv2", f"layer1.{b}.bn2") for b in range(3)]
    masks = {}
    for conv, bn in stage1_producers:  # channel 3 of the stage-1 stream: dead everywhere
        keep = torch.ones(16, dtype=torch.bool)
        keep[3] = False
        masks[f"{conv}.weight"] = keep.view(16, 1, 1, 1).expand(16, 16 if conv != "conv1" else 3, 3, 3).clone()
        masks[f"{bn}.weight"] = masks[f"{bn}.bias"] = keep.clone()
    keep = torch.ones(16, dtype=torch.bool)  # channel 5: dead in one producer only (stays, as zeros)
    keep[5] = False
    masks["layer1.1.conv2.weight"][5] = False
    masks["layer1.1.bn2.weight"] = masks["layer1.1.bn2.weight"] & keep
    masks["layer1.1.bn2.bias"] = masks["layer1.1.bn2.bias"] & keep
    apply_masks(model, masks)
    small = compact(model, torch.zeros(2, 3, 32, 32))
    assert_same_function(model, small, 32)
    assert small.conv1.out_channels == 15 and small.layer1[1].conv2.out_channels == 15
    # option A now carries 15 channels; stage 2's channel 11 (fed by the removed one) is zero padding
    assert small.layer2[0].shortcut.index.tolist() == [8, 9, 10] + list(range(12, 24))
    save_compacted(tmp_path / "small.pt", small, "cifar_resnet20", 10, step=1)
    rebuilt, info = load_compacted(tmp_path / "small.pt")  # weights_only=True; the constructor's shapes are not used
    assert info["meta"]["step"] == 1
    assert_same_function(model, rebuilt, 32)
    torch.load(tmp_path / "small.pt", weights_only=True)


@pytest.mark.parametrize("pruner", ["filters", "connections"])
def test_resnet20_compaction_across_stages(pruner):
    model = randomise_batch_norms(create_model("cifar_resnet20", 10))
    x = torch.zeros(2, 3, 32, 32)
    get_pruner(pruner).prune(model, prunable_parameters(model, exclude=("linear",)), 0.6, x)
    small = compact(model, x)
    assert_same_function(model, small, 32)
    assert n_params(small) < 0.8 * n_params(model)


@pytest.mark.slow
def test_googlenet_with_auxiliary_heads(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomise_batch_norms(create_model("torchvision/googlenet", 5, init_weights=True))
    x = torch.zeros(2, 3, 64, 64)
    get_pruner("filters").prune(model, prunable_parameters(model, exclude=("fc",)), 0.5, x)
    small = compact(model, x)
    assert_same_function(model, small, 64)
    assert n_params(small) < 0.5 * n_params(model)
    assert small.inception3a.branch1.conv.out_channels < 64  # concatenated branches shrink independently
    training = copy_model(small).train()  # (a training-mode pass updates batch-norm statistics)
    logits, aux2, aux1 = training(torch.randn(2, 3, 64, 64))  # the auxiliary heads follow their shrunk inputs
    assert logits.shape == aux1.shape == aux2.shape == (2, 5)
    save_compacted(tmp_path / "g.pt", small, "torchvision/googlenet", 5, {"init_weights": True})
    rebuilt, _ = load_compacted(tmp_path / "g.pt")
    assert_same_function(model, rebuilt, 64)


@pytest.mark.slow
def test_torchvision_resnet_and_vit_mlp():
    for name, size, classifier in [("torchvision/resnet18", 64, "fc"), ("small_vit", 64, "head")]:
        model = randomise_batch_norms(create_model(name, 5))
        x = torch.zeros(2, 3, size, size)
        get_pruner("filters").prune(model, prunable_parameters(model, exclude=(classifier,)), 0.5, x)
        small = compact(model, x)
        assert_same_function(model, small, size)
        assert n_params(small) < n_params(model)


def test_compaction_refuses_what_it_cannot_do_exactly():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Sigmoid(), nn.Conv2d(8, 4, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.zeros(2, 3, 16, 16)
    get_pruner("filters", scope="layer").prune(model, prunable_parameters(model, ("conv",)), 0.5, x)
    with pytest.raises(CompactionError, match="does not map zero to zero"):  # sigmoid(0) = 0.5
        compact(model, x)
    from torchvision.models.swin_transformer import SwinTransformer

    swin = SwinTransformer([4, 4], 32, [2, 2], [2, 4], [4, 4], num_classes=5)  # swin_t's classes, smaller
    with pytest.raises(CompactionError, match="Swin"):
        compact(swin, torch.zeros(2, 3, 64, 64))
