"""The 12 parametric distortions of model-vs-human, as transforms for any set of images.

Each follows ``code/image_manipulation.py`` of rgeirhos/generalisation-humans-DNNs (which made the
benchmark's stimuli) and is named by the benchmark's dataset name; its conditions are the benchmark's
data conditions (``modelvshuman/datasets/experiments.py``), mildest first. Images are handled as that
code does (float RGB in [0, 1]; greyscale as ``skimage.color.rgb2gray``, output as three equal channels)
and come back as uint8, as the saved stimuli did.

``distort(images, name, condition, seed)`` works on a whole set at once: power equalisation uses the
set's own mean amplitude spectrum ("averaged over all used images"), every random draw comes from
``seed`` so a condition is the same images for every checkpoint.

Deviations from that code, each for a stated reason:
- phase scrambling shifts the two phases of every conjugate pair by opposite amounts (the code pairs the
  shifts wrongly, so the inverse FFT is complex and its real part discarded; its comment states the intent);
- false colour uses a nominal display gamma of 2.2 for the monitor look-up table: the measured table
  (``x_gamma_function.npy``, a binary file of that repository) is not available offline;
- eidolons: see ``lib.align.eidolon``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray
BG_GREY = 0.4423  # the stimuli's mean grey, used as the filters' border value
NOISE_CONTRAST = 0.3  # uniform noise is added to the 30%-contrast greyscale image
DISPLAY_GAMMA = 2.2

# false colour: cone fundamentals of the monitor primaries and the DKL opponent transform (image_manipulation.py)
CONES = np.array([[0.1619982647, 0.208049264, 0.0389347448],
                  [0.0330275785, 0.2496504557, 0.0618343518],
                  [0.0015524055, 0.0198861001, 0.1890224274]])
CONES_WHITE = np.array([0.20449114, 0.17225619, 0.10523047])
OPPONENT = np.array([[9.27590805, 9.27590805, 0],
                     [7.86421647, -9.33587662, 0],
                     [-3.39709047, -3.39709047, 12.16230246]])


# ----------------------------------------------------------------------------- elementary operations
def rgb2gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N, H, W)."""
    return images @ GREY_WEIGHTS


def as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def grey_contrast(images: np.ndarray, contrast: float) -> np.ndarray:
    """grayscale_contrast: greyscale, then scaled towards mid-grey, ``(1 - c) / 2 + c * image``."""
    if not 0 <= contrast <= 1:
        raise ValueError(f"contrast must be in [0, 1], got {contrast}")
    return (1 - contrast) / 2 + contrast * rgb2gray(images)


def _blur_stack(grey: np.ndarray, std: float) -> np.ndarray:
    # gaussian_filter per image (no smoothing across the stack), border = the stimuli's mean grey
    return ndimage.gaussian_filter(grey, sigma=(0, std, std), mode="constant", cval=BG_GREY)


def high_pass(images: np.ndarray, std: float) -> np.ndarray:
    """image - low-pass(image), shifted back to the mean grey; std = inf keeps the image (mean shifted)."""
    grey = rgb2gray(images)
    low = np.full_like(grey, BG_GREY) if np.isinf(std) else _blur_stack(grey, std)
    new = grey - low
    new = new + (BG_GREY - new.mean(axis=(1, 2), keepdims=True))
    return np.clip(new, 0, 1)


def low_pass(images: np.ndarray, std: float) -> np.ndarray:
    return np.clip(_blur_stack(rgb2gray(images), std), 0, 1)


def _conjugate_region(shape: tuple[int, int]) -> tuple[slice, slice]:
    """The part of a centred (fftshift-ed) spectrum that is point-symmetric about the DC term."""
    h, w = shape
    return slice(1 if h % 2 == 0 else 0, None), slice(1 if w % 2 == 0 else 0, None)


def phase_scramble(images: np.ndarray, width: float, rng: np.random.Generator) -> np.ndarray:
    """Add uniform noise in [-width, width] degrees to the phases, opposite for conjugate frequencies."""
    grey = rgb2gray(images)
    n, h, w = grey.shape
    spectrum = np.fft.fftshift(np.fft.fft2(grey), axes=(1, 2))
    amplitude, phase = np.abs(spectrum), np.angle(spectrum)
    rows, cols = _conjugate_region((h, w))
    region = phase[:, rows, cols].reshape(n, -1)  # a copy; flat index i pairs with length - 1 - i
    half = region.shape[1] // 2
    shifts = (rng.random((n, half)) - 0.5) * 2 * width / 180 * np.pi
    region[:, :half] += shifts
    region[:, half + 1:] -= shifts[:, ::-1]
    phase[:, rows, cols] = region.reshape(n, h - rows.start, w - cols.start)
    new = np.fft.ifft2(np.fft.ifftshift(amplitude * np.exp(1j * phase), axes=(1, 2))).real
    return np.clip(new, 0, 1)


def mean_amplitude_spectrum(images: np.ndarray) -> np.ndarray:
    """Centred amplitude spectrum of the greyscale images, averaged over the set (calculate_mean_power_spectrum.py)."""
    return np.abs(np.fft.fftshift(np.fft.fft2(rgb2gray(images)), axes=(1, 2))).mean(axis=0)


def power_equalise(images: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """Keep every image's phases, give it the mean amplitude spectrum."""
    grey = rgb2gray(images)
    if grey.shape[1:] != amplitude.shape:
        raise ValueError(f"amplitude spectrum {amplitude.shape} does not match the images {grey.shape[1:]}")
    phase = np.angle(np.fft.fftshift(np.fft.fft2(grey), axes=(1, 2)))
    new = np.fft.ifft2(np.fft.ifftshift(amplitude * np.exp(1j * phase), axes=(1, 2))).real
    return np.clip(new, 0, 1)


def false_colour(images: np.ndarray, gamma: float = DISPLAY_GAMMA) -> np.ndarray:
    """Opponent colours: invert the L-M and S-(L+M) channels of DKL space around the white point."""
    lut = (np.arange(256) / 255.0) ** gamma  # display output of each 8-bit value
    linear = lut[np.rint(images * 255).astype(np.uint8)]
    cones = linear @ CONES.T - CONES_WHITE
    dkl = cones @ OPPONENT.T
    dkl[..., 1:] *= -1
    new_cones = dkl @ np.linalg.inv(OPPONENT).T + CONES_WHITE
    rgb = np.clip(new_cones @ np.linalg.inv(CONES).T, 0, 1)
    # back to 8-bit values: the nearest entry of the look-up table (inv_monitor_nonlinearity)
    index = np.clip(np.searchsorted(lut, rgb), 1, 255)
    nearer_below = (rgb - lut[index - 1]) <= (lut[index] - rgb)
    return (index - nearer_below) / 255.0


def rotate(images: np.ndarray, degrees: int) -> np.ndarray:
    """Greyscale, rotated counter-clockwise by a multiple of 90 degrees (rotate90/180/270)."""
    if degrees % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {degrees}")
    return np.rot90(rgb2gray(images), k=degrees // 90, axes=(1, 2))


def uniform_noise(images: np.ndarray, width: float, rng: np.random.Generator) -> np.ndarray:
    grey = grey_contrast(images, NOISE_CONTRAST)
    return np.clip(grey + rng.uniform(-width, width, size=grey.shape), 0, 1)


# ----------------------------------------------------------------------------- the benchmark's datasets
@dataclass(frozen=True)
class Distortion:
    """One parametric dataset: its conditions (mildest first), its control condition and how to make it."""

    name: str
    conditions: tuple[str, ...]
    neutral: str | None       # the benchmark's control condition (its first), None if it has none
    xlabel: str
    make: Callable            # (images float (N, H, W, 3), condition, rng, **options) -> (N, H, W[, 3])

    def __call__(self, images: np.ndarray, condition: str, rng: np.random.Generator, **options) -> np.ndarray:
        if condition not in self.conditions:
            raise ValueError(f"{self.name} has no condition {condition!r}; its conditions are {self.conditions}")
        out = self.make(images, condition, rng, **options)
        return out if out.ndim == 4 else as_rgb(out)


def _eidolon(name: str, coherence_tag: str) -> Distortion:
    """Eidolon I/II/III: reach 1..128, coherence 1.0/0.3/0.0, grain 10 (conditions 'reach-coherence*10-grain')."""
    def make(images, condition, rng, eidolon_size=None, eidolon_fields=None):
        from lib.align.eidolon import FACTORY_SIZE, eidolon

        reach, coherence, grain = (float(v) for v in condition.split("-"))
        return eidolon(images, reach, coherence / 10, grain, rng, size=eidolon_size or FACTORY_SIZE,
                       fields=eidolon_fields)

    conditions = tuple(f"{2 ** k}-{coherence_tag}-10" for k in range(8))
    return Distortion(name, conditions, None, "log2 of 'reach'", make)


DISTORTIONS: dict[str, Distortion] = {d.name: d for d in [
    Distortion("colour", ("cr", "bw"), "cr", "colour",
               lambda x, c, rng: x if c == "cr" else rgb2gray(x)),
    Distortion("contrast", ("c100", "c50", "c30", "c15", "c10", "c05", "c03", "c01"), "c100", "contrast (%)",
               lambda x, c, rng: grey_contrast(x, int(c[1:]) / 100)),
    Distortion("high-pass", ("inf", "3.0", "1.5", "1.0", "0.7", "0.55", "0.45", "0.4"), "inf", "filter std",
               lambda x, c, rng: high_pass(x, float(c))),
    Distortion("low-pass", ("0", "1", "3", "5", "7", "10", "15", "40"), "0", "filter std",
               lambda x, c, rng: low_pass(x, float(c))),
    Distortion("phase-scrambling", ("0", "30", "60", "90", "120", "150", "180"), "0", "phase noise width (deg)",
               lambda x, c, rng: phase_scramble(x, float(c), rng)),
    Distortion("power-equalisation", ("0", "pow"), "0", "power spectrum",
               lambda x, c, rng: rgb2gray(x) if c == "0" else power_equalise(x, mean_amplitude_spectrum(x))),
    Distortion("false-colour", ("True", "False"), "True", "colour",
               lambda x, c, rng: x if c == "True" else false_colour(x)),
    Distortion("rotation", ("0", "90", "180", "270"), "0", "rotation angle (deg)",
               lambda x, c, rng: rotate(x, int(c))),
    _eidolon("eidolonI", "10"),
    _eidolon("eidolonII", "3"),
    _eidolon("eidolonIII", "0"),
    Distortion("uniform-noise", ("0.0", "0.03", "0.05", "0.1", "0.2", "0.35", "0.6", "0.9"), "0.0",
               "uniform noise width", lambda x, c, rng: uniform_noise(x, float(c), rng)),
]}


def check_conditions(selection: dict) -> None:
    """Fail before any compute on an unknown distortion or condition, naming the valid ones."""
    for name, conditions in selection.items():
        if name not in DISTORTIONS:
            raise ValueError(f"unknown distortion {name!r}; choose from {sorted(DISTORTIONS)}")
        bad = [c for c in conditions if str(c) not in DISTORTIONS[name].conditions]
        if bad:
            raise ValueError(f"{name} has no condition(s) {bad}; its conditions are {DISTORTIONS[name].conditions}")


def distort(images: np.ndarray, name: str, condition: str, seed: int = 0, **options) -> np.ndarray:
    """uint8 images (N, H, W, 3) under one distortion condition -> uint8 (N, H, W, 3).

    ``options`` for the eidolons: ``eidolon_size`` (working resolution, default the factory's 256 px) and
    ``eidolon_fields`` (independent displacement fields per condition, default one per image as the factory).
    """
    check_conditions({name: [condition]})
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (N, H, W, 3), got {images.dtype} {images.shape}")
    distortion = DISTORTIONS[name]
    options = options if name.startswith("eidolon") else {}
    rng = np.random.default_rng([seed, sorted(DISTORTIONS).index(name), distortion.conditions.index(condition)])
    out = distortion(images.astype(np.float64) / 255, str(condition), rng, **options)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)
