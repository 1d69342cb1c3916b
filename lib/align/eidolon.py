"""The Eidolon factory's *partially coherent disarray* (Koenderink et al., JoV 2017), reimplemented.

Model-vs-human's eidolon I/II/III stimuli call ``helpers.PartiallyCoherentDisarray`` of the Eidolon
factory (github.com/gestaltrevision/Eidolon, Python port) through ``wrapper.py`` of
rgeirhos/generalisation-humans-DNNs, with the picture built at ``SZ = 256``, scale levels from
``1/sqrt(2)`` by factors of ``sqrt(2)`` (``ceil(2 log2(SZ/4))`` levels) and ``MAX_SIGMA = SZ/4``:

1. the greyscale picture is resized to SZ (long side, Lanczos) and embedded, mirrored at its borders,
   in a power-of-two plane at least 1.5 times larger ("fat fiducial data plane");
2. it is decomposed into a difference-of-Gaussians scale space (the layers sum to the finest blur);
3. every layer is displaced by its own field, ``coherence * incoherent_k + coherent_k`` per axis, where
   ``incoherent_k`` is white noise blurred at ``grain`` and standardised, and ``coherent_k`` is the sum
   of standardised noise planes blurred at every scale >= the layer's, each weighted by scale / MAX_SIGMA
   (coarse layers drag the fine ones along);
4. pixel lookup at ``floor(clip(position + reach * displacement))`` and the layers are summed, cropped
   and clipped to [0, 255].

Two places differ from the factory's Python code, both evident bugs fixed as the code's own intent
states: the blurred noise plane is standardised as ``(c - mean) / std`` (the code has ``c - mean / std``),
and the Gaussian blur is a 2-D circular convolution (the port's "faster" 1-D FFT of the flattened arrays
shifts every negative column offset of the kernel by one row; its commented-out 2-D version is the intent).
The benchmark authors' ``wrapper.py`` warns that the Python port has a bug they fixed in a pull request
(#1) before making the stimuli; that patch is not available here, so which bug it was is not known.

``size`` is the working resolution. At ``size=256`` this is the factory's picture; a smaller ``size``
(64 for the embedded images) scales ``reach`` and ``grain`` by ``size / 256`` so that a condition stands
for the same distortion relative to the image, at a fraction of the cost.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import fft

FACTORY_SIZE = 256
MIN_SIGMA = 1 / math.sqrt(2)
SIGMA_FACTOR = math.sqrt(2)


def scale_levels(size: int) -> np.ndarray:
    """The factory's scale levels for a picture of ``size`` pixels (MAX_SIGMA = size / 4)."""
    count = int(math.ceil(2 * math.log(size / 4.0) / math.log(2)))
    return MIN_SIGMA * SIGMA_FACTOR ** np.arange(count)


def _power_of_two_ceiling(n: float) -> int:
    return 1 if n < 1 else int(2 ** math.ceil(math.log2(n)))


def embed(planes: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, h, w) -> (N, hh, ww) with the picture in the middle and mirrored borders; returns the offsets."""
    _, h, w = planes.shape
    hh, ww = _power_of_two_ceiling(1.5 * h), _power_of_two_ceiling(1.5 * w)
    dh, dw = (hh - h) // 2, (ww - w) // 2
    fat = np.pad(planes, ((0, 0), (dh, hh - h - dh), (dw, ww - w - dw)), mode="symmetric")
    return fat, (dh, dw)


@lru_cache(maxsize=64)
def _gaussian_fft(h: int, w: int, sigma: float) -> np.ndarray:
    """rFFT of the factory's periodic, sampled Gaussian kernel (integer offsets, 1/(sqrt(2 pi) sigma) per axis)."""
    def axis(n):
        v = np.concatenate([np.arange(n // 2 + 1), np.arange(n // 2 - n + 1, 0)]).astype(np.float64)
        return np.exp(-v ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)

    return fft.rfft2(axis(h)[:, None] * axis(w)[None, :]).astype(np.complex64)


def blur(planes: np.ndarray, sigma: float) -> np.ndarray:
    """Circular convolution with the Gaussian (single precision: this is the eidolons' inner loop)."""
    h, w = planes.shape[-2:]
    return fft.irfft2(fft.rfft2(planes.astype(np.float32)) * _gaussian_fft(h, w, float(sigma)), s=(h, w))


def blurred_noise(shape: tuple, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The factory's BlurredRandomGaussianDataPlane: clipped white noise, blurred, standardised per plane."""
    data = rng.standard_normal(shape, dtype=np.float32)
    # the factory scales the plane to max |value| 127.5 and clips at 127; standardising makes the scale moot
    limit = np.abs(data).max(axis=(-2, -1), keepdims=True) * np.float32(127 / 127.5)
    c = blur(np.clip(data, -limit, limit), sigma)
    c -= c.mean(axis=(-2, -1), keepdims=True)
    return c / c.std(axis=(-2, -1), keepdims=True)


def dog_scale_space(fat: np.ndarray, levels: np.ndarray) -> list[np.ndarray]:
    """Difference-of-Gaussians layers G_k - G_{k+1}, the last one G_{n-1}: they sum to G_0."""
    spectrum = fft.rfft2(fat.astype(np.float32))
    h, w = fat.shape[-2:]
    blurred = [fft.irfft2(spectrum * _gaussian_fft(h, w, float(s)), s=(h, w)) for s in levels]
    return [blurred[k] - blurred[k + 1] for k in range(len(levels) - 1)] + [blurred[-1]]


def displacement_stack(shape, levels, max_sigma, coherence, grain, rng) -> list[np.ndarray]:
    """PartiallyCoherentScaledGaussianDataStack: one displacement plane per scale level (one axis)."""
    scaled = [blurred_noise(shape, s, rng) * (s / max_sigma) for s in levels]
    coherent = np.cumsum(scaled[::-1], axis=0)[::-1]  # level k: sum of the planes at scales >= k
    return [coherence * blurred_noise(shape, grain, rng) + coherent[k] for k in range(len(levels))]


def disarray(plane: np.ndarray, dx: np.ndarray, dy: np.ndarray, reach: float) -> np.ndarray:
    """DataPlaneDisarray: every pixel takes the value at its displaced (floored, clipped) position.

    ``plane`` (N, h, w); the F displacement fields (F, h, w) serve the pictures in turn (picture i: i mod F).
    """
    n, h, w = plane.shape
    rows = np.clip(dx * reach + np.arange(h)[None, :, None], 0, h - 1).astype(np.int64)
    cols = np.clip(dy * reach + np.arange(w)[None, None, :], 0, w - 1).astype(np.int64)
    pick = np.arange(n) % len(dx)
    return plane[np.arange(n)[:, None, None], rows[pick], cols[pick]]


def partially_coherent_disarray(grey: np.ndarray, reach: float, coherence: float, grain: float,
                                rng: np.random.Generator, fields: int | None = None) -> np.ndarray:
    """Eidolons of greyscale pictures (N, h, w) with values in [0, 255], at their own resolution.

    ``fields``: how many independent displacement fields to draw (None: one per picture, as the factory;
    fewer are shared in turn, which makes a set of eidolons that much cheaper).
    """
    n, h, w = grey.shape
    size = max(h, w)
    levels = scale_levels(size)
    fat, (dh, dw) = embed(grey.astype(np.float64))
    shape = (min(fields or n, n), *fat.shape[1:])
    dx = displacement_stack(shape, levels, size / 4, coherence, grain, rng)
    dy = displacement_stack(shape, levels, size / 4, coherence, grain, rng)
    out = sum(disarray(layer, x, y, reach) for layer, x, y in zip(dog_scale_space(fat, levels), dx, dy))
    return np.clip(out[:, dh:dh + h, dw:dw + w], 0, 255)


def eidolon(images: np.ndarray, reach: float, coherence: float, grain: float, rng: np.random.Generator,
            size: int = FACTORY_SIZE, fields: int | None = None) -> np.ndarray:
    """Eidolons of RGB images (N, H, W, 3) in [0, 1], worked at ``size`` pixels; greyscale RGB out, same shape.

    As the factory: resize (Lanczos) and convert to 8-bit luma with PIL, disarray, then back to the input size.
    """
    from PIL import Image

    n, height, width, _ = images.shape
    scale = size / max(height, width)
    work = (max(1, round(width * scale)), max(1, round(height * scale)))
    resize = work != (width, height)
    as_pil = [Image.fromarray((image * 255).astype(np.uint8)) for image in images]  # truncation, as data_to_pic
    grey = np.stack([np.asarray((im.resize(work, Image.LANCZOS) if resize else im).convert("L"), dtype=np.float64)
                     for im in as_pil])
    factor = size / FACTORY_SIZE
    out = partially_coherent_disarray(grey, reach * factor, coherence, grain * factor, rng, fields).astype(np.uint8)
    if resize:
        out = np.stack([np.asarray(Image.fromarray(o).resize((width, height), Image.LANCZOS)) for o in out])
    back = out.astype(np.float64) / 255
    return np.repeat(back[..., None], 3, axis=-1)
