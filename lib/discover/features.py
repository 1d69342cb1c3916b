"""A backbone's last feature map as a set of patch features, the input of LOST and TokenCut.

- CNNs: the output of the architecture's ``feature_layer`` (``get_spec(name).feature_layer``,
  e.g. ResNet ``layer4``; Swin's last stage, read as a CNN's map), one patch per spatial position,
  with LOST's LayerNorm over patches x channels. ``dilation`` (2 or 4) turns the stride of the last
  stage(s) into dilation first, as LOST does for ResNet-50 (torchvision's ``replace_stride_with_dilation``):
  the map gets 2x (4x) finer with the same weights.
- ViTs (timm and torchvision): the keys, queries or values of the last block's attention
  (``which="k" | "q" | "v"``, heads concatenated, LOST's default ``k``) or the last block's output
  tokens (``"tokens"``); class and register tokens are dropped.

``centre=True`` (not in LOST) first subtracts from every patch the image's mean patch feature (each
channel's mean over the patches). Correlations then measure how patches differ within the image. The
small models of the embedded default need it: their last maps are dominated by a component that every
patch of an image shares, so with LOST's features ~90% of patch pairs correlate positively, the
degree does not tell object from background and both algorithms return about the whole image (see
notebook 04).

The forward pass stops as soon as the features are captured (what follows is never needed).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lib.models import get_layer, get_spec

VIT_FEATURES = ("k", "q", "v", "tokens")


class _Captured(Exception):
    """Raised by a forward hook to stop the forward pass once the features are in hand."""


# ----------------------------------------------------------------------------- dilation
def dilate_last_stages(model: nn.Module, factor: int) -> nn.Module:
    """A copy of ``model`` whose last log2(factor) downsampling stages use dilation instead of stride.

    Supported: torchvision ResNets (``layer4``, and ``layer3`` for factor 4; BasicBlock ResNets too,
    which torchvision's own constructor refuses) and the repository's ``small_cnn`` (its last max-pools).
    On even-sized inputs the dilated map sampled every ``factor`` positions equals the original map.
    """
    if factor == 1:
        return model
    if factor not in (2, 4):
        raise ValueError(f"dilation must be 1, 2 or 4, got {factor}")
    import torchvision

    from lib.models.small import SmallCNN

    model = copy.deepcopy(model)
    stages = {2: 1, 4: 2}[factor]
    if isinstance(model, torchvision.models.ResNet):
        previous = 1
        for stage in [model.layer3, model.layer4][2 - stages:]:
            _resnet_dilate(stage, previous, previous * 2)
            previous *= 2
    elif isinstance(model, SmallCNN):
        pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
        if len(pools) < stages:
            raise ValueError(f"small_cnn has {len(pools)} pooling stage(s); cannot dilate {stages}")
        dilation = 1
        for pool in pools[-stages:]:
            # stride 1, dilated like its input, right/bottom edge padded by -inf: position 2i keeps value i
            model.features[pool] = nn.Sequential(nn.ConstantPad2d((0, dilation, 0, dilation), float("-inf")),
                                                 nn.MaxPool2d(2, stride=1, dilation=dilation))
            dilation *= 2
            for module in model.features[pool + 1:]:
                if isinstance(module, nn.MaxPool2d):
                    break
                for conv in (m for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1):
                    conv.dilation, conv.padding = (dilation, dilation), (dilation * (conv.kernel_size[0] // 2),) * 2
    else:
        raise ValueError(f"dilation is implemented for torchvision ResNets and small_cnn, not {type(model).__name__}; "
                         "use dilation=1")
    return model


def _resnet_dilate(stage: nn.Sequential, previous: int, dilation: int) -> None:
    """torchvision's ``_make_layer(dilate=True)`` applied to built blocks: the strided conv keeps the
    previous dilation with stride 1, every later 3x3 conv of the stage gets the new dilation."""
    seen_stride = False
    for block in stage:
        for name in ("conv1", "conv2", "conv3"):
            conv = getattr(block, name, None)
            if conv is None or conv.kernel_size[0] == 1:
                if conv is not None and conv.stride != (1, 1):
                    conv.stride = (1, 1)
                continue
            if conv.stride != (1, 1):
                conv.stride, conv.dilation, conv.padding = (1, 1), (previous, previous), (previous, previous)
                seen_stride = True
            elif seen_stride:
                conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


# ----------------------------------------------------------------------------- features
def _vit_kind(model: nn.Module) -> str | None:
    import torchvision
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return "timm"
    if isinstance(model, torchvision.models.VisionTransformer):
        return "torchvision"
    return None


class PatchFeatures:
    """Patch features of a backbone: ``features(images) -> (feats (B, N, d), grid (h, w))``.

    model: the network (eval mode); name: its registry name (for the family and the feature layer).
    which: ViT features, one of ``k``, ``q``, ``v``, ``tokens`` (default ``k``); not for CNNs.
    dilation: 1, 2 or 4 (CNNs that support it, see :func:`dilate_last_stages`).
    layernorm: LOST's LayerNorm of CNN maps over patches x channels (default on; never for ViTs, as LOST).
    centre: subtract the image's mean patch feature first (a deviation from LOST, off by default).
    """

    def __init__(self, model: nn.Module, name: str, which: str | None = None, dilation: int = 1,
                 layernorm: bool = True, centre: bool = False):
        spec = get_spec(name)
        self.vit = _vit_kind(model)
        if spec.family == "vit" and self.vit is None:
            raise ValueError(f"{name}: patch features are implemented for timm and torchvision ViTs, "
                             f"not {type(model).__name__}")
        if self.vit:
            which = which or "k"
            if which not in VIT_FEATURES:
                raise ValueError(f"which must be one of {VIT_FEATURES}, got {which!r}")
            if dilation != 1:
                raise ValueError(f"{name} is a ViT: dilation applies to CNNs only (set dilation=1)")
        else:
            if which is not None:
                raise ValueError(f"{name} is a CNN: 'which' ({which!r}) selects ViT features; leave it unset")
            if not spec.feature_layer:
                raise ValueError(f"{name} has no feature_layer in its model spec; register one")
        self.name, self.which, self.dilation = name, which, int(dilation)
        self.layernorm, self.centre = layernorm, centre
        self.model = dilate_last_stages(model, self.dilation).eval()
        self.layer = None if self.vit else get_layer(self.model, spec.feature_layer)
        self.nhwc = not self.vit and spec.nhwc(spec.feature_layer)  # Swin: (B, h, w, C) maps

    # --- the hooked module and how its output becomes (B, N, d)
    def _hook_target(self) -> nn.Module:
        if self.vit == "timm":
            block = self.model.blocks[-1]
            return block if self.which == "tokens" else block.attn.qkv
        if self.vit == "torchvision":
            block = self.model.encoder.layers[-1]
            return block if self.which == "tokens" else block.ln_1
        return self.layer

    def _prefix(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 1))

    def _to_patches(self, output: torch.Tensor) -> torch.Tensor:
        if not self.vit:
            feats = output.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C), row-major patches
            feats = feats - feats.mean(1, keepdim=True) if self.centre else feats
            return F.layer_norm(feats, feats.shape[1:]) if self.layernorm else feats
        if self.which != "tokens":
            if self.vit == "torchvision":  # nn.MultiheadAttention: project ln_1(x) with its in_proj weights
                attn = self.model.encoder.layers[-1].self_attention
                output = F.linear(output, attn.in_proj_weight, attn.in_proj_bias)
            dim = output.shape[-1] // 3
            part = "qkv".index(self.which)
            output = output[..., part * dim:(part + 1) * dim]  # heads stay concatenated, as LOST reshapes them
        feats = output[:, self._prefix():]
        return feats - feats.mean(1, keepdim=True) if self.centre else feats

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        captured = {}

        def hook(module, inputs, output):
            captured["out"] = output
            raise _Captured

        handle = self._hook_target().register_forward_hook(hook)
        try:
            self.model(images)
        except _Captured:
            pass
        finally:
            handle.remove()
        if "out" not in captured:
            raise RuntimeError(f"the feature layer of {self.name} was not reached in the forward pass")
        output = captured["out"].permute(0, 3, 1, 2) if self.nhwc else captured["out"]
        feats = self._to_patches(output).float()
        if self.vit:
            patch = self.patch_size()
            grid = (images.shape[-2] // patch, images.shape[-1] // patch)
        else:
            grid = tuple(output.shape[-2:])
        if grid[0] * grid[1] != feats.shape[1]:
            raise RuntimeError(f"{feats.shape[1]} patch features do not fill a {grid} grid")
        return feats, grid

    def patch_size(self) -> int:
        """The ViT patch size, or the CNN's stride measured on a probe input (what images are padded to)."""
        if self.vit == "timm":
            return int(self.model.patch_embed.patch_size[0])
        if self.vit == "torchvision":
            return int(self.model.patch_size)
        if not hasattr(self, "_stride"):
            probe = torch.zeros(1, 3, 256, 256)
            _, grid = self(probe)
            self._stride = 256 // grid[0]
        return self._stride
