"""Attributions for the predicted class, captum style: one class per attribution, one ``attribute`` call.

``attribution.attribute(inputs, target=None)`` returns raw attributions, as captum does:

- pixel attributions (``saliency``, ``ig_smoothgrad``, ``guided_gradcam``): a tensor shaped like the input, (N, C, H, W);
- map attributions (``gradcam``, ``attention``, ``rollout``): an (N, h, w) map at the resolution of the layer they read.

``lib.interpret.metrics.relevance_map`` turns either into the non-negative (N, H, W) map that is scored.

Work shared between attributions. Grad-CAM, Guided Grad-CAM, Saliency and the attention maps all read one
forward pass of a batch (:class:`SharedPass`): the prediction, the activations of the Grad-CAM layer and
the attention weights come from it, one ordinary backward pass gives both the Grad-CAM layer's gradient
and the input gradient (Saliency), and one guided backward pass (rectifier gradients clamped at zero)
gives guided backpropagation. :class:`Attributor` runs several attributions on a batch that way; each attribution
alone builds its own pass. Integrated Gradients in SmoothGrad is captum's ``IntegratedGradients``
averaged over noisy copies (what ``NoiseTunnel`` computes), computed here as captum computes it but with
(image x noise sample x step) rows batched ``internal_batch_size`` at a time, every chunk full
(tests/test_interpret_methods.py checks it against captum).

Model parameters are frozen (``requires_grad=False``) during every call, so no parameter gradient is
computed or kept; a pass and its graph are dropped when the batch is done.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from lib.registry import Registry
from lib.models import get_layer

RECTIFIERS = (nn.ReLU, nn.ReLU6)
SMOOTH_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.ELU)


def gauss_legendre(n: int) -> tuple[list[float], list[float]]:
    """(step sizes, alphas) of an n-point Gauss-Legendre rule on [0, 1], exactly captum's
    ``approximation_parameters("gausslegendre")`` (IntegratedGradients' default attribution)."""
    import numpy as np

    points, weights = np.polynomial.legendre.leggauss(n)
    return list(0.5 * weights), list(0.5 * (1 + points))


def rectifier_network(model: nn.Module) -> bool:
    """Whether guided backpropagation is defined for ``model``: its activations are rectifier modules.

    A GELU transformer is not one even where a small MLP inside it has a ReLU (Swin V2's position-bias MLP):
    that ReLU is off the path from the input to the output, and guiding it would change nothing.
    """
    modules = list(model.modules())
    return (any(isinstance(m, RECTIFIERS) for m in modules)
            and not any(isinstance(m, SMOOTH_ACTIVATIONS) for m in modules))


@contextmanager
def frozen(model: nn.Module):
    """Parameters do not require gradients inside the block (restored after): only input gradients are computed."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _memory_format(x: torch.Tensor):
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def tokens_to_grid(tokens: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """ViT tokens (N, prefix + h*w, D) -> (N, D, h, w), dropping the class (and register) tokens."""
    patches = tokens[:, num_prefix_tokens:]
    if grid is None:
        side = math.isqrt(patches.shape[1])
        if side * side != patches.shape[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid; pass grid=(h, w)")
        grid = (side, side)
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], *grid)


def vit_layout(model: nn.Module) -> tuple[int, tuple[int, int] | None]:
    """(number of prefix tokens, patch grid) of a timm-style ViT; the grid is None (square, read from the
    token count) when the model takes any input size (timm's ``dynamic_img_size``)."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if getattr(model, "dynamic_img_size", False):
        grid = None
    return int(getattr(model, "num_prefix_tokens", 1)), (tuple(grid) if grid is not None else None)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of a timm ViT's blocks, in order (each with ``qkv``, ``num_heads``, ``head_dim``)."""
    blocks = getattr(model, "blocks", None)
    modules = [getattr(b, "attn", None) for b in blocks] if blocks is not None else []
    if not modules or not all(hasattr(m, "qkv") and hasattr(m, "num_heads") for m in modules):
        raise ValueError(f"{type(model).__name__} has no timm-style attention blocks (model.blocks[i].attn.qkv); "
                         "the attention attributions need a timm VisionTransformer")
    return modules


def attention_from_qkv(attn: nn.Module, qkv: torch.Tensor) -> torch.Tensor:
    """Softmax attention weights (N, heads, T, T) recomputed from the output of ``attn.qkv``.

    timm's Attention may use fused scaled-dot-product attention, which never materialises the weights;
    recomputing them from the projection (with the module's own q/k norms and scale) works either way.
    """
    n, t, _ = qkv.shape
    q, k, _ = qkv.reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


class SharedPass:
    """One forward pass of a batch whose graph several attributions read.

    layers: dotted names whose outputs (activations) are kept; guided: hook the rectifiers so that the
    guided backward pass can clamp their gradients; attention: keep every block's attention weights.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | None = None,
                 layers=(), guided: bool = False, attention: bool = False):
        self.model = model
        self.inputs = inputs.detach().clone().requires_grad_(True)
        self.activations: dict[str, torch.Tensor] = {}
        self.attention: list[torch.Tensor] = []
        self._guiding = {"on": False}  # read by the rectifier hooks, which must not refer to this pass (_guide)
        hooks = [get_layer(model, name).register_forward_hook(self._keeper(name)) for name in layers]
        if guided:
            rectifiers = [m for m in model.modules() if isinstance(m, RECTIFIERS)]
            if not rectifiers:
                raise ValueError(f"{type(model).__name__} has no ReLU/ReLU6 modules: guided backpropagation "
                                 "(Guided Grad-CAM) is defined for rectifier networks only")
            hooks += [m.register_forward_hook(self._guide) for m in rectifiers]
        if attention:
            hooks += [m.qkv.register_forward_hook(self._attention_keeper(m)) for m in attention_modules(model)]
        try:
            with torch.enable_grad():
                self.logits = model(self.inputs)
        finally:
            for hook in hooks:
                hook.remove()
        self.target = self.logits.detach().argmax(1) if target is None else target.to(self.logits.device)
        self.score = self.logits.gather(1, self.target[:, None]).sum()  # images are independent in eval mode

    def _keeper(self, name):
        def hook(module, args, output):
            self.activations[name] = output
        return hook

    def _guide(self, module, args, output):
        # Clamping the gradient at a rectifier's output equals captum's clamping at its input: the
        # rectifier's own backward only multiplies by its 0/1 derivative. The hook holds the switch, not the
        # pass: the pass holds the graph and the graph its hooks, and a cycle through autograd's C++ nodes is
        # never collected (every call would keep its whole graph).
        if output.requires_grad:
            switch = self._guiding
            output.register_hook(lambda grad: grad.clamp(min=0) if switch["on"] else None)

    def _attention_keeper(self, attn):
        def hook(module, args, output):
            with torch.no_grad():
                self.attention.append(attention_from_qkv(attn, output.detach()))
        return hook

    @cached_property
    def gradients(self) -> dict[str, torch.Tensor]:
        """Ordinary gradients of the target logits, w.r.t. the input ("input") and every kept layer, in ONE backward."""
        names = list(self.activations)
        grads = torch.autograd.grad(self.score, [self.inputs] + [self.activations[n] for n in names],
                                    retain_graph=True, allow_unused=True)
        out = {"input": grads[0]}
        for name, grad, act in zip(names, grads[1:], (self.activations[n] for n in names)):
            out[name] = torch.zeros_like(act) if grad is None else grad
        return out

    @cached_property
    def guided_gradient(self) -> torch.Tensor:
        """Guided backpropagation (Springenberg et al.): gradient w.r.t. the input, rectifier gradients clamped at 0."""
        self._guiding["on"] = True
        try:
            (grad,) = torch.autograd.grad(self.score, self.inputs, retain_graph=True)
        finally:
            self._guiding["on"] = False
        return grad


class Attribution:
    """Base class. ``pooling`` says how raw attributions become a relevance map:
    "square" (sum of squares over channels; pixel attributions) or "cam" (min-max normalised map)."""

    name = ""
    pooling = "square"
    nominal_passes = 1.0  # forward+backward passes per image, for the benchmark

    def __init__(self, model: nn.Module):
        self.model = model

    def requirements(self) -> dict:
        """What the shared pass must record for this attribution: layers, guided, attention."""
        return {}

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | None = None, shared: SharedPass | None = None):
        with frozen(self.model):
            if shared is None:
                shared = SharedPass(self.model, inputs, target, **self.requirements())
            return self._from_pass(shared)

    def _from_pass(self, shared: SharedPass) -> torch.Tensor:
        raise NotImplementedError


class GradCAM(Attribution):
    """Grad-CAM (Selvaraju et al. 2017) on ``layer``: ReLU(sum_c mean_xy(dy/dA_c) A_c), as captum's LayerGradCam.

    A ViT layer's tokens are laid out on the patch grid first (class/register tokens dropped).
    """

    name, pooling = "gradcam", "cam"

    def __init__(self, model: nn.Module, layer: str):
        super().__init__(model)
        get_layer(model, layer)  # fail now on a bad name
        self.layer = layer

    def requirements(self):
        return {"layers": (self.layer,)}

    def _grid(self, tensor):
        if tensor.ndim == 4:
            return tensor
        if tensor.ndim != 3:
            raise ValueError(f"Grad-CAM layer {self.layer!r} gives a {tensor.ndim}-d output; expected (N, C, h, w) "
                             "or ViT tokens (N, T, D)")
        prefix, grid = vit_layout(self.model)
        return tokens_to_grid(tensor, prefix, grid)

    def _from_pass(self, shared):
        acts, grads = self._grid(shared.activations[self.layer]), self._grid(shared.gradients[self.layer])
        weights = grads.mean(dim=(2, 3), keepdim=True)
        return F.relu((weights * acts).sum(1)).detach()


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map upsampled (bilinearly) to the input."""

    name, pooling = "guided_gradcam", "square"
    nominal_passes = 2.0  # standalone: Grad-CAM's pass plus a guided one (shared: one forward less)

    def requirements(self):
        return {"layers": (self.layer,), "guided": True}

    def _from_pass(self, shared):
        cam = super()._from_pass(shared)
        cam = F.interpolate(cam[:, None], size=shared.inputs.shape[2:], mode="bilinear", align_corners=False)
        return (shared.guided_gradient * cam).detach()


class Saliency(Attribution):
    """Saliency (Simonyan et al. 2014): |d y_target / d x|, as captum's Saliency(abs=True)."""

    name = "saliency"

    def _from_pass(self, shared):
        return shared.gradients["input"].abs().detach()


class SmoothIntegratedGradients(Attribution):
    """Integrated Gradients inside SmoothGrad: the mean of captum's IntegratedGradients over noisy copies.

    Study A: ``samples`` = 2 noisy copies, zero baseline, ``steps`` = 50; the noise is Gaussian with
    ``noise_std`` in units of the normalised input (captum's NoiseTunnel default 1.0, which Study A's code
    keeps). This is what ``NoiseTunnel(IntegratedGradients).attribute(nt_type="smoothgrad")`` computes,
    except that each image's noise comes from its own generator, seeded by ``seed`` and the image's
    bytes: an image gets the same noise whatever batch it is in and at every checkpoint, so batching
    never changes a map (the global RNG is untouched). ``internal_batch_size`` rows (image x sample x
    step) go through the model per pass (:meth:`integrated_gradients`: captum's computation, every chunk full).
    """

    name = "ig_smoothgrad"

    def __init__(self, model: nn.Module, steps: int = 50, samples: int = 2, noise_std: float = 1.0,
                 internal_batch_size: int | None = None, seed: int = 0):
        super().__init__(model)
        if steps < 1 or samples < 1 or noise_std < 0:
            raise ValueError(f"need steps >= 1, samples >= 1, noise_std >= 0; got {steps}, {samples}, {noise_std}")
        self.steps, self.samples, self.noise_std = int(steps), int(samples), float(noise_std)
        self.internal_batch_size, self.seed = internal_batch_size, int(seed)
        self.nominal_passes = float(self.steps * self.samples)

    def noise(self, inputs: torch.Tensor) -> torch.Tensor:
        """(samples, N, C, H, W) Gaussian noise, each image's drawn from a generator seeded by its content."""
        draws = []
        for image in inputs.detach().cpu():
            digest = hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=8).digest()
            generator = torch.Generator().manual_seed((int.from_bytes(digest, "little") ^ self.seed) % 2**63)
            draws.append(torch.randn((self.samples, *image.shape), generator=generator))
        return (torch.stack(draws, dim=1) * self.noise_std).to(inputs.device, inputs.dtype)

    def attribute(self, inputs, target=None, shared=None):
        if target is None:
            target = shared.target if shared is not None else self._predict(inputs)
        n = len(inputs)
        noisy = (inputs.detach()[None] + self.noise(inputs)).flatten(0, 1)  # sample-major rows
        with frozen(self.model):
            attributions = self.integrated_gradients(noisy.contiguous(memory_format=_memory_format(inputs)),
                                                     target.repeat(self.samples))
        return attributions.view(self.samples, n, *inputs.shape[1:]).mean(0)

    def integrated_gradients(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """captum's ``IntegratedGradients(model).attribute(inputs, baselines=0.0, target=target, n_steps=steps)``
        (attribution "gausslegendre"), computed the same way but batched by rows rather than by whole steps.

        The (row x step) scaled inputs ``alpha_s * x`` go through the model ``internal_batch_size`` at a time
        (every chunk full, whatever the number of rows per step), one forward and one backward per chunk; each
        row's input gradient is weighted by its step's Gauss-Legendre weight (float32, as captum's) and summed
        over the steps (in place, no index tensors), times the input. Only the order of the additions and the batch composition of the
        passes differ from captum (tests/test_interpret_methods.py: equal to float tolerance).
        """
        rows, steps = len(inputs), self.steps
        step_sizes, alphas = gauss_legendre(steps)
        # captum: python float * float32 tensor, and float32 step sizes
        alphas = torch.tensor(alphas, dtype=torch.float64).float().tolist()
        weights = torch.tensor(step_sizes, dtype=torch.float64).float().tolist()
        layout = _memory_format(inputs)
        chunk = max(1, self.internal_batch_size or rows * steps)
        total = torch.zeros_like(inputs)  # same memory format: the accumulation below is a plain vector add
        for lo in range(0, rows * steps, chunk):
            hi = min(lo + chunk, rows * steps)
            # The chunk's flat (step-major, as captum lays out its scaled inputs) range as (step, first row,
            # last row) segments: a partial step, whole steps, a partial step.
            segments = []
            flat = lo
            while flat < hi:
                step, first = divmod(flat, rows)
                last = min(rows, first + hi - flat)
                segments.append((step, first, last))
                flat += last - first
            scaled = torch.cat([alphas[step] * inputs[first:last] for step, first, last in segments])
            scaled = scaled.contiguous(memory_format=layout).requires_grad_(True)
            index = torch.cat([target[first:last] for _, first, last in segments])
            with torch.enable_grad():
                score = self.model(scaled).gather(1, index[:, None]).sum()
                (grad,) = torch.autograd.grad(score, scaled)
            offset = 0
            for step, first, last in segments:
                total[first:last].add_(grad[offset:offset + last - first], alpha=weights[step])
                offset += last - first
        return total * inputs

    @torch.no_grad()
    def _predict(self, inputs):
        return self.model(inputs).argmax(1)


class CLSAttention(Attribution):
    """The last block's attention from the class token to every patch, summed over heads (Study A's ViT map)."""

    name, pooling = "attention", "cam"
    nominal_passes = 0.5  # one forward pass, no backward

    def __init__(self, model: nn.Module):
        super().__init__(model)
        attention_modules(model)

    def requirements(self):
        return {"attention": True}

    def _patch_map(self, cls_row, shared):
        prefix, grid = vit_layout(self.model)
        return tokens_to_grid(cls_row[:, :, None], prefix, grid)[:, 0]

    def _from_pass(self, shared):
        last = shared.attention[-1]  # (N, heads, T, T)
        return self._patch_map(last[:, :, 0].sum(1), shared)


class AttentionRollout(CLSAttention):
    """Attention rollout (Abnar & Zuidema 2020): product over blocks of (heads fused, + identity for the
    residual, rows renormalised); the class token's row over the patches."""

    name = "rollout"

    def __init__(self, model: nn.Module, head_fusion: str = "mean"):
        super().__init__(model)
        if head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"head_fusion must be mean, max or min, got {head_fusion!r}")
        self.head_fusion = head_fusion

    def _from_pass(self, shared):
        rollout = None
        for weights in shared.attention:
            fused = weights.mean(1) if self.head_fusion == "mean" else getattr(weights, self.head_fusion)(1).values
            fused = fused + torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
            fused = fused / fused.sum(-1, keepdim=True)
            rollout = fused if rollout is None else fused @ rollout
        return self._patch_map(rollout[:, 0], shared)


ATTRIBUTIONS = Registry("attribution", {cls.name: cls for cls in (GradCAM, GuidedGradCAM, Saliency,
                                                                 SmoothIntegratedGradients, CLSAttention,
                                                                 AttentionRollout)})


def register_attribution(cls: type[Attribution]) -> type[Attribution]:
    """Class decorator: add a :class:`Attribution` subclass to :data:`ATTRIBUTIONS` under its ``name``, so that the
    interpret stage's ``attributions`` (params.yaml ``interpret.attributions``) accept it."""
    return ATTRIBUTIONS.add_class(cls, Attribution)


DEFAULT_ATTRIBUTIONS = {"cnn": ("gradcam", "guided_gradcam", "ig_smoothgrad", "saliency"),
                   "vit": ("gradcam", "ig_smoothgrad", "saliency", "attention", "rollout")}


def default_attributions(model: nn.Module, spec) -> list[str]:
    """The model family's default attributions (``DEFAULT_ATTRIBUTIONS``) that apply to this model: Guided Grad-CAM
    needs a rectifier network (:func:`rectifier_network`: not GELU transformers, not GoogLeNet, whose ReLUs are
    functions), the attention maps need timm ViT blocks (torchvision's ViT and Swin have none)."""
    names = []
    for name in DEFAULT_ATTRIBUTIONS[spec.family]:
        if name == "guided_gradcam" and not rectifier_network(model):
            continue
        if issubclass(ATTRIBUTIONS[name], CLSAttention):
            try:
                attention_modules(model)
            except ValueError:
                continue
        names.append(name)
    return names


def check_attribution_names(names) -> None:
    unknown = sorted(set(names) - set(ATTRIBUTIONS))
    if unknown:
        raise ValueError(f"unknown attribution(s) {unknown}; available: {sorted(ATTRIBUTIONS)}")


def default_cam_layer(model: nn.Module, spec) -> str:
    """The spec's ``cam_layer``; for a ViT whose cam layer is a transformer block, that block's ``norm1``.

    With class-token pooling the last block's *patch* outputs never reach the classifier (their gradient
    is zero), so Grad-CAM on a ViT reads the input of the last block's attention instead, as
    pytorch_grad_cam recommends (``blocks[-1].norm1``).
    """
    if spec.cam_layer is None:
        raise ValueError(f"model {spec.name!r} has no cam_layer in its spec; pass cam_layer explicitly")
    if spec.family == "vit" and hasattr(get_layer(model, spec.cam_layer), "norm1"):
        return f"{spec.cam_layer}.norm1"
    return spec.cam_layer


def create_attribution(name: str, model: nn.Module, spec=None, cam_layer: str | None = None, **options) -> Attribution:
    """``create_attribution("gradcam", model, spec)``: a attribution with its options (unknown options are an error)."""
    check_attribution_names([name])
    cls = ATTRIBUTIONS[name]
    if issubclass(cls, GradCAM):
        layer = cam_layer or (default_cam_layer(model, spec) if spec is not None else None)
        if layer is None:
            raise ValueError(f"{name} needs a layer: pass cam_layer or the model's spec")
        attribution = cls(model, layer, **options)
    else:
        attribution = cls(model, **options)
    if isinstance(attribution, GuidedGradCAM) and not rectifier_network(model):
        raise ValueError(f"guided_gradcam needs a network of ReLU/ReLU6 modules and {type(model).__name__} is not one "
                         "(e.g. a ViT uses GELU, GoogLeNet calls relu as a function); drop it from the attributions")
    return attribution


class Attributor:
    """Several attributions on one batch, sharing the prediction forward pass, the activations and the backward passes.

    ``attribute(inputs)`` -> (predicted class, {attribution name: raw attributions}).
    """

    def __init__(self, attributions: list[Attribution]):
        if not attributions:
            raise ValueError("no attributions given")
        self.attributions = {m.name: m for m in attributions}
        self.model = attributions[0].model
        needs = [m.requirements() for m in attributions]
        self.requirements = {
            "layers": tuple(dict.fromkeys(layer for n in needs for layer in n.get("layers", ()))),
            "guided": any(n.get("guided") for n in needs),
            "attention": any(n.get("attention") for n in needs),
        }

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | None = None):
        with frozen(self.model):
            shared = SharedPass(self.model, inputs, target, **self.requirements)
            maps = {name: attribution.attribute(inputs, shared.target, shared) for name, attribution in self.attributions.items()}
            return shared.target, maps
