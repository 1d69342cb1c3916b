"""Attributions against independent implementations (captum, pytorch_grad_cam, timm) and their axioms."""

import warnings

import numpy as np
import pytest
import torch

from lib.interpret.methods import (
    Attributor,
    SharedPass,
    attention_modules,
    create_attribution,
    default_cam_layer,
)
from lib.interpret.metrics import relevance_map
from lib.models import create_model, get_layer, get_spec


def _model(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, **kwargs).eval()
    # Random BatchNorm statistics so the activations are not the trivial ones of a fresh init.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _inputs(n=4, size=64, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cnn():
    return _model("small_cnn")


@pytest.fixture(scope="module")
def vit():
    return _model("small_vit")


def _close(ours, reference, rtol=1e-5):
    scale = reference.abs().max()
    assert scale > 0
    assert (ours - reference).abs().max() <= rtol * scale


@pytest.mark.slow
def test_gradcam_matches_pytorch_grad_cam_on_cnn(cnn):
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = _inputs()
    attribution = create_attribution("gradcam", cnn, get_spec("small_cnn"))
    target = cnn(x).argmax(1)
    ours = relevance_map(attribution.attribute(x), "cam", size=(64, 64))
    reference = ReferenceGradCAM(cnn, [get_layer(cnn, "features.-1")])(
        x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    assert np.abs(ours.numpy() - reference).max() < 1e-4  # torch vs OpenCV bilinear resize
    assert ours.amax(dim=(1, 2)).eq(1).all()


def test_gradcam_matches_pytorch_grad_cam_on_vit(vit):
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = _inputs()
    layer = default_cam_layer(vit, get_spec("small_vit"))
    assert layer == "blocks.-1.norm1"  # the last block's patch outputs never reach the class token head
    target = vit(x).argmax(1)
    ours = relevance_map(create_attribution("gradcam", vit, get_spec("small_vit")).attribute(x), "cam", size=(64, 64))

    def reshape(tokens):  # pytorch_grad_cam's documented ViT transform
        return tokens[:, 1:].reshape(tokens.shape[0], 8, 8, tokens.shape[2]).permute(0, 3, 1, 2)

    reference = ReferenceGradCAM(vit, [get_layer(vit, layer)], reshape_transform=reshape)(
        x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    assert np.abs(ours.numpy() - reference).max() < 1e-4


@pytest.mark.slow
def test_cam_guided_and_saliency_equal_captum(cnn):
    from captum.attr import GuidedGradCam, LayerGradCam, Saliency

    x = _inputs()
    spec = get_spec("small_cnn")
    attributions = [create_attribution(n, cnn, spec) for n in ("gradcam", "guided_gradcam", "saliency")]
    target, maps = Attributor(attributions).attribute(x)
    layer = get_layer(cnn, "features.-1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns about in-place ReLUs; the values are unaffected
        _close(maps["gradcam"], LayerGradCam(cnn, layer).attribute(x, target, relu_attributions=True)[:, 0])
        _close(maps["guided_gradcam"], GuidedGradCam(cnn, layer).attribute(x, target, interpolate_mode="bilinear"))
        _close(maps["saliency"], Saliency(cnn).attribute(x, target))


@pytest.mark.slow
def test_shared_pass_runs_one_forward_and_changes_nothing(cnn):
    x = _inputs()
    spec = get_spec("small_cnn")
    calls = []
    hook = cnn.register_forward_hook(lambda *a: calls.append(1))
    try:
        attributions = [create_attribution(n, cnn, spec) for n in ("gradcam", "guided_gradcam", "saliency")]
        target, shared = Attributor(attributions).attribute(x)
        assert len(calls) == 1
        alone = {m.name: m.attribute(x, target) for m in attributions}
    finally:
        hook.remove()
    assert len(calls) == 4
    for name in alone:
        assert torch.equal(shared[name], alone[name])


def test_no_gradient_state_is_kept():
    cnn = _model("small_cnn")
    flags = [p.requires_grad for p in cnn.parameters()]
    Attributor([create_attribution("guided_gradcam", cnn, get_spec("small_cnn")),
                create_attribution("ig_smoothgrad", cnn, steps=3, samples=1)]).attribute(_inputs(2))
    assert all(p.grad is None for p in cnn.parameters())
    assert [p.requires_grad for p in cnn.parameters()] == flags


@pytest.mark.parametrize("guided", [False, True])
def test_a_pass_and_its_graph_are_freed_after_use(cnn, guided):
    """A hook that refers back to its pass closes a cycle through autograd's C++ graph that the garbage collector
    cannot see: every call would keep its whole graph (measured: 14 MB per Guided Grad-CAM call on small_cnn)."""
    import gc
    import weakref

    shared = SharedPass(cnn, _inputs(2), guided=guided, layers=("features.0",))
    shared.guided_gradient if guided else shared.gradients
    freed, graph = weakref.ref(shared), weakref.ref(shared.logits)
    del shared
    gc.collect()
    assert freed() is None and graph() is None


def test_integrated_gradients_completeness(cnn):
    """Without noise, IG's attributions sum to f(x) - f(baseline) for the target (Sundararajan et al.)."""
    x = _inputs(2)
    attribution = create_attribution("ig_smoothgrad", cnn, steps=64, samples=1, noise_std=0.0)
    target = cnn(x).argmax(1)
    attributions = attribution.attribute(x, target)
    with torch.no_grad():
        gap = cnn(x).gather(1, target[:, None])[:, 0] - cnn(torch.zeros_like(x)).gather(1, target[:, None])[:, 0]
    assert torch.allclose(attributions.sum(dim=(1, 2, 3)), gap, rtol=0.02, atol=1e-3 * gap.abs().max().item())


def test_ig_without_noise_is_captums_integrated_gradients(cnn):
    from captum.attr import IntegratedGradients

    x = _inputs(2)
    target = cnn(x).argmax(1)
    ours = create_attribution("ig_smoothgrad", cnn, steps=10, samples=1, noise_std=0.0).attribute(x, target)
    _close(ours, IntegratedGradients(cnn).attribute(x, baselines=0.0, target=target, n_steps=10))


@pytest.mark.slow
def test_smoothgrad_noise_is_per_image_and_seeded(cnn):
    x = _inputs(3)
    target = cnn(x).argmax(1)
    attribution = create_attribution("ig_smoothgrad", cnn, steps=5, samples=2, internal_batch_size=30)
    batched = attribution.attribute(x, target)
    # Another chunking of the (image x sample x step) rows, and each image alone: the same maps.
    chunked = create_attribution("ig_smoothgrad", cnn, steps=5, samples=2, internal_batch_size=6).attribute(x, target)
    assert torch.allclose(batched, chunked, atol=1e-6 * batched.abs().max().item())
    alone = torch.cat([attribution.attribute(x[i:i + 1], target[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, alone, atol=1e-6 * batched.abs().max().item())
    noise = attribution.noise(x)
    assert noise.shape == (2, 3, 3, 64, 64) and abs(noise.std().item() - 1.0) < 0.02
    assert not torch.equal(noise[0], noise[1])  # two different noisy copies
    other_seed = create_attribution("ig_smoothgrad", cnn, steps=5, samples=2, seed=1).attribute(x, target)
    assert not torch.allclose(batched, other_seed)


def test_maps_do_not_depend_on_the_batch(cnn):
    x = _inputs(3)
    attributions = [create_attribution(n, cnn, get_spec("small_cnn")) for n in ("gradcam", "guided_gradcam", "saliency")]
    _, together = Attributor(attributions).attribute(x)
    _, single = Attributor(attributions).attribute(x[1:2])
    for name in together:
        assert torch.allclose(together[name][1:2], single[name], atol=1e-6 * together[name].abs().max().item())


def test_attention_from_qkv_matches_timm_unfused(vit):
    x = _inputs(2)
    block = attention_modules(vit)[-1]
    seen = []
    block.fused_attn = False  # timm's explicit path materialises the weights right before attn_drop
    hook = block.attn_drop.register_forward_hook(lambda module, args, output: seen.append(args[0].detach()))
    try:
        shared = SharedPass(vit, x, attention=True)
    finally:
        hook.remove()
        block.fused_attn = True
    assert len(shared.attention) == len(vit.blocks)
    assert torch.allclose(shared.attention[-1], seen[0], atol=1e-6)


def test_cls_attention_and_rollout_by_hand():
    vit = _model("small_vit", depth=2)
    x = _inputs(2)
    weights = SharedPass(vit, x, attention=True).attention
    cls_attention = create_attribution("attention", vit).attribute(x)
    assert torch.allclose(cls_attention, weights[-1][:, :, 0, 1:].sum(1).reshape(2, 8, 8))
    # Rollout by hand for two blocks: rows of (mean over heads + I) / 2, multiplied top-down.
    a1, a2 = ((w.mean(1) + torch.eye(65)) / 2 for w in weights)
    rollout = create_attribution("rollout", vit).attribute(x)
    assert torch.allclose(rollout, (a2 @ a1)[:, 0, 1:].reshape(2, 8, 8), atol=1e-6)


def test_errors_name_the_problem(cnn, vit):
    with pytest.raises(ValueError, match="unknown attribution"):
        create_attribution("lime", cnn)
    with pytest.raises(ValueError, match="ReLU"):
        create_attribution("guided_gradcam", vit, get_spec("small_vit"))
    with pytest.raises(ValueError, match="attention blocks"):
        create_attribution("attention", cnn)
    with pytest.raises(AttributeError):
        create_attribution("gradcam", cnn, cam_layer="features.nope")
    with pytest.raises(ValueError, match="steps"):
        create_attribution("ig_smoothgrad", cnn, steps=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small_cnn", "small_vit"])
def test_hand_batched_ig_equals_captum_noise_tunnel(name, cnn, vit):
    """The batched IG in SmoothGrad against captum's NoiseTunnel(IntegratedGradients) on the same noisy inputs:
    the noise is NoiseTunnel's own draw (global RNG, seeded), replayed into ``integrated_gradients``."""
    from captum.attr import IntegratedGradients, NoiseTunnel

    model = cnn if name == "small_cnn" else vit
    x = _inputs(3)
    target = model(x).argmax(1)
    torch.manual_seed(7)
    reference = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=2, stdevs=1.0, baselines=0.0, target=target, n_steps=7)
    torch.manual_seed(7)
    noisy = x.repeat_interleave(2, dim=0) + torch.normal(0, torch.tensor(1.0).repeat((6, 3, 64, 64)))
    for rows in (None, 5, 16):  # chunks that cut through steps and rows
        attribution = create_attribution("ig_smoothgrad", model, steps=7, samples=2, internal_batch_size=rows)
        ours = attribution.integrated_gradients(noisy, target.repeat_interleave(2)).view(3, 2, 3, 64, 64).mean(1)
        assert ours.dtype == reference.dtype
        _close(ours, reference)
