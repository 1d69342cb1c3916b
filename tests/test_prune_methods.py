"""Study B's pruners: exact shares, exactly the eligible weights, references, masks that persist."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lib.models import create_model, load_checkpoint, save_checkpoint
from lib.prune import (Connections, Filters, Unstructured, apply_masks, current_masks, fold_masks, get_pruner,
                       prunable_parameters, prune_step, sparsity_report)
from lib.prune.masks import copy_model, get_mask

X64 = torch.zeros(2, 3, 64, 64)


class TwoConv(nn.Module):
    """conv(2->4) -> BN -> ReLU -> conv(4->3) -> pool -> linear(3->2), weights set by hand."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 1, bias=False)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            # filter L1 norms 0.3, 4, 1, 6; input-channel L1 norms of conv2: 3, 0.6, 9, 1.5
            self.conv1.weight.copy_(torch.tensor([[0.1, -0.2], [3.0, 1.0], [0.5, -0.5], [-2.0, 4.0]]).view(4, 2, 1, 1))
            self.conv2.weight.copy_(torch.tensor([[1.0, 0.2, 3.0, 0.5], [-1.0, 0.2, 3.0, 0.5],
                                                  [1.0, -0.2, 3.0, 0.5]]).view(3, 4, 1, 1))

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_filters_remove_the_lowest_l1_filters_with_bias_and_batch_norm_channel():
    model = TwoConv()
    params = prunable_parameters(model, ("conv",))
    Filters(scope="layer").prune(model, params, 0.5, torch.zeros(2, 2, 4, 4))
    masks = current_masks(model)
    # conv1: 4 filters -> the two smallest (0.3 and 1) go; conv2: 3 filters (equal norms) -> round(1.5) = 2 go
    assert masks["conv1.weight"][:, 0, 0, 0].tolist() == [False, True, False, True]
    assert masks["conv1.bias"].tolist() == [False, True, False, True]
    assert masks["bn.weight"].tolist() == [False, True, False, True]
    assert masks["bn.bias"].tolist() == [False, True, False, True]
    assert int(masks["conv2.weight"].reshape(3, -1).any(1).sum()) == 1
    assert "fc.weight" not in masks  # linear layers were not prunable here


def test_connections_remove_the_lowest_l1_input_channels():
    model = TwoConv()
    Connections(scope="layer").prune(model, prunable_parameters(model, ("conv",)), 0.5)
    masks = current_masks(model)
    assert masks["conv2.weight"][0, :, 0, 0].tolist() == [True, False, True, False]  # norms 3, .6, 9, 1.5
    assert set(masks) == {"conv1.weight", "conv2.weight"}  # no companions: bias and BN stay


@pytest.mark.parametrize("dim", [0, 1])
def test_structured_per_layer_equals_torch_ln_structured(dim):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, widths=(8, 16), convs=(1, 1))
    reference = copy_model(model)
    params = prunable_parameters(model, ("conv",))
    pruner = Filters(scope="layer") if dim == 0 else Connections(scope="layer")
    pruner.prune(model, params, 0.5, torch.zeros(2, 3, 16, 16))
    for name, module in prunable_parameters(reference, ("conv",)):
        torch_prune.ln_structured(module, "weight", amount=0.5, n=1, dim=dim)
        assert torch.equal(module.weight_mask.bool(), current_masks(model)[f"{name}.weight"]), name


def test_unstructured_global_equals_torch_global_unstructured():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, widths=(8, 16), convs=(1, 1))
    reference = copy_model(model)
    Unstructured().prune(model, prunable_parameters(model), 0.6)
    torch_prune.global_unstructured([(m, "weight") for _, m in prunable_parameters(reference)],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.6)
    for name, module in prunable_parameters(reference):
        assert torch.equal(module.weight_mask.bool(), current_masks(model)[f"{name}.weight"])


def test_prune_step_removes_a_share_of_the_remaining_weights():
    model = create_model("small_cnn", 10, widths=(8, 16), convs=(1, 1))
    params = prunable_parameters(model)
    total = sum(p.weight.numel() for p in params)
    prune_step(model, params, 0.2)
    prune_step(model, params, 0.2)
    assert sparsity_report(model, params)["prunable_zeros"] == pytest.approx(total * (1 - 0.8 ** 2), abs=2)


@pytest.mark.parametrize("name", ["unstructured", "filters", "connections"])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("selection", ["l1", "random"])
def test_exact_share_of_exactly_the_eligible_weights(name, scope, selection):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10)
    params = prunable_parameters(model, ("conv", "linear"), exclude=("features.4", "fc"))  # a block and the classifier
    before = {k: v.clone() for k, v in model.state_dict().items()}
    get_pruner(name, selection, scope).prune(model, params, 0.7, X64)
    report = sparsity_report(model, params)
    total = report["prunable_params"]
    if name == "unstructured" or scope == "layer":
        for p in params:  # per layer exact (rounded to a weight or a channel)
            n = p.weight.shape[{"filters": 0, "connections": 1}.get(name, 0)] if name != "unstructured" else p.weight.numel()
            expected = round(0.7 * n) if name == "unstructured" else min(round(0.7 * n), n - 1)
            layer = report["per_layer"][p.name]
            if name == "unstructured":
                assert scope == "global" or layer["zeros"] == expected
            else:
                assert layer["zeros"] == expected * (p.weight.numel() // n)
        if name == "unstructured" and scope == "global":
            assert report["prunable_zeros"] == round(0.7 * total)
    else:  # global structured: to within half of the largest channel
        largest = max(p.weight.numel() // p.weight.shape[0 if name == "filters" else 1] for p in params)
        assert abs(report["prunable_zeros"] - 0.7 * total) <= largest / 2 + 1
    fold_masks(model)
    after = model.state_dict()
    changed = {k.rsplit(".", 1)[0] for k in after if not torch.equal(after[k], before[k])}
    eligible = {p.name for p in params}
    companions = {"features.0.1", "features.2.1", "features.6.1", "features.6.4"}  # the batch norms after them
    assert changed <= eligible | (companions if name == "filters" else set())
    assert not any(k.startswith(("features.4.", "fc")) for k in changed)  # excluded block and classifier untouched


def test_random_selection_is_seeded_and_differs_from_l1():
    model = create_model("small_cnn", 10)
    masks = {}
    for key, pruner in {"l1": Filters(), "r0": Filters("random", seed=0), "r0b": Filters("random", seed=0),
                        "r1": Filters("random", seed=1)}.items():
        m = copy_model(model)
        pruner.prune(m, prunable_parameters(m, ("conv",)), 0.5, X64)
        masks[key] = current_masks(m)["features.6.0.weight"]
    assert torch.equal(masks["r0"], masks["r0b"])
    assert not torch.equal(masks["r0"], masks["r1"]) and not torch.equal(masks["r0"], masks["l1"])


def test_masks_grow_over_steps_and_never_revive():
    model = create_model("small_cnn", 10)
    params = prunable_parameters(model, ("conv",))
    Connections().prune(model, params, 0.3)
    first = current_masks(model)
    Connections().prune(model, params, 0.6)
    for key, mask in current_masks(model).items():
        assert not (mask & ~first[key]).any()
    assert sparsity_report(model, params)["sparsity"] == pytest.approx(0.6, abs=0.02)


def test_masks_persist_through_retraining_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10)
    params = prunable_parameters(model, exclude=("fc",))
    Filters().prune(model, params, 0.5, X64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(2):  # removed weights stay exactly zero under SGD with momentum and weight decay
        model.train()
        nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3])).backward()
        optimizer.step()
        optimizer.zero_grad()
    masks = current_masks(model)
    fold_masks(model)
    for key, mask in masks.items():
        assert (model.state_dict()[key][~mask] == 0).all()
    save_checkpoint(tmp_path / "c.pt", model, "small_cnn", 10, masks=masks)
    loaded, info = load_checkpoint(tmp_path / "c.pt")
    assert set(info["masks"]) == set(masks) and all(torch.equal(info["masks"][k], masks[k]) for k in masks)
    apply_masks(loaded, info["masks"])
    assert all(torch.equal(get_mask(loaded.get_submodule(k.rsplit(".", 1)[0]), k.rsplit(".", 1)[1]), m)
               for k, m in masks.items())
    assert sparsity_report(loaded, prunable_parameters(loaded, exclude=("fc",)))["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_copy_model_leaves_the_original_masked():
    model = create_model("small_cnn", 10)
    Unstructured().prune(model, prunable_parameters(model), 0.5)
    replica = copy_model(model)
    fold_masks(replica)
    assert current_masks(model) and not current_masks(replica)
    assert model.features[0][0].weight.shape == replica.features[0][0].weight.shape


def test_bad_input_fails_before_any_work():
    model = create_model("small_cnn", 10)
    with pytest.raises(ValueError, match="unknown pruner"):
        get_pruner("channels")
    with pytest.raises(ValueError, match="unknown scope"):
        Filters(scope="network")
    with pytest.raises(ValueError, match="example_input"):
        Filters().prune(model, prunable_parameters(model), 0.5)
    with pytest.raises(ValueError, match="not in"):
        prunable_parameters(model, exclude=("classifier",))
    with pytest.raises(ValueError, match="target sparsity"):
        Unstructured().prune(model, prunable_parameters(model), 1.0)
