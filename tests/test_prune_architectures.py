"""Every pruner on every architecture of the issue: exact share of exactly the eligible weights, a pruned
model still trains (forward and backward, removed weights get no gradient), masks survive save/load.

GoogLeNet keeps its auxiliary heads (training mode). torchvision's ViT and Swin are their own classes at
small sizes: the same code as ViT-B/32 (whose q/k/v projection is a bare parameter of
nn.MultiheadAttention) and Swin-T (whose attention reads its projections' weights without calling them).
"""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lib.models import load_checkpoint, register_model, save_checkpoint
from lib.models.registry import _REGISTRY, create_model
from lib.prune import apply_masks, current_masks, fold_masks, get_pruner, prunable_parameters, sparsity_report
from lib.prune.graph import flatten_outputs
from lib.prune.masks import copy_model

if "test_torchvision_vit" not in _REGISTRY:
    @register_model("test_torchvision_vit", family="vit", classifier="heads")
    def _tiny_torchvision_vit(num_classes: int = 5):
        from torchvision.models.vision_transformer import VisionTransformer

        return VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                 num_classes=num_classes)

if "test_torchvision_swin" not in _REGISTRY:
    @register_model("test_torchvision_swin", family="vit", classifier="head")
    def _tiny_torchvision_swin(num_classes: int = 5):
        from torchvision.models.swin_transformer import SwinTransformer

        return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                               num_classes=num_classes)

ARCHS = {  # name: (registry name, kwargs, classifier, image size)
    "small_cnn": ("small_cnn", {}, "fc", 64),
    "small_vit": ("small_vit", {}, "head", 64),
    "cifar_resnet20": ("cifar_resnet20", {}, "linear", 32),
    "resnet18": ("torchvision/resnet18", {}, "fc", 64),
    "googlenet": ("torchvision/googlenet", {"init_weights": True}, "fc", 64),
    "torchvision_vit": ("test_torchvision_vit", {}, "heads", 64),
    "torchvision_swin": ("test_torchvision_swin", {}, "head", 64),
}
NUM_CLASSES = 5


@pytest.fixture(scope="module", params=list(ARCHS))
def built(request):
    name, kwargs, classifier, size = ARCHS[request.param]
    torch.manual_seed(0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model(name, NUM_CLASSES, **kwargs)
    return request.param, name, kwargs, model, classifier, size


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["unstructured", "filters", "connections"])
def test_pruner_on_architecture(built, pruner, tmp_path):
    arch, name, kwargs, base, classifier, size = built
    model = copy_model(base)
    x = torch.randn(2, 3, size, size)
    params = prunable_parameters(model, exclude=(classifier,))
    get_pruner(pruner).prune(model, params, 0.5, x)

    # exact share of the prunable weights (structured: to within half of the largest channel)
    report = sparsity_report(model, params)
    dim = {"filters": 0, "connections": 1}.get(pruner)
    tolerance = 0.5 if dim is None else max(p.weight.numel() // p.weight.shape[dim] for p in params) / 2 + 1
    assert abs(report["prunable_zeros"] - 0.5 * report["prunable_params"]) <= tolerance

    # masks only on eligible weights, plus (filters) their biases and batch-norm channels
    masks = current_masks(model)
    eligible = {p.key for p in params}
    assert eligible <= set(masks)
    modules = dict(model.named_modules())
    for key in set(masks) - eligible:
        owner, _, param = key.rpartition(".")
        assert pruner == "filters", key
        assert param in ("bias", "in_proj_bias") or isinstance(modules[owner], nn.BatchNorm2d), key
    assert not any(k.startswith(classifier + ".") for k in masks)

    # still trains: forward and backward in training mode (GoogLeNet: with its auxiliary heads)
    model.train()
    outputs = flatten_outputs(model(x))
    assert all(o.shape == (2, NUM_CLASSES) for o in outputs)
    if arch == "googlenet":
        assert len(outputs) == 3
    sum(o.square().mean() for o in outputs).backward()
    for p in params:
        original = p.module.parametrizations[p.param].original
        assert original.grad is not None and (original.grad[~masks[p.key]] == 0).all()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, NUM_CLASSES)

    if pruner == "filters":  # masks survive a checkpoint (once per architecture: the files are large)
        folded = copy_model(model)
        fold_masks(folded)
        save_checkpoint(tmp_path / "c.pt", folded, name, NUM_CLASSES, kwargs, masks=masks)
        loaded, info = load_checkpoint(tmp_path / "c.pt")
        assert all(torch.equal(info["masks"][k], masks[k]) for k in masks)
        apply_masks(loaded, info["masks"])
        reloaded = prunable_parameters(loaded, exclude=(classifier,))
        assert sparsity_report(loaded, reloaded)["prunable_zeros"] == report["prunable_zeros"]
        assert all(parametrize.is_parametrized(p.module, p.param) for p in reloaded)
