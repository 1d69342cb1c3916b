"""The 12 parametric distortions: neutral levels leave the image as the benchmark's control, strength is monotone."""

import numpy as np
import pytest

from lib.align import distortions as D
from lib.align import eidolon as E
from lib.align.distortions import DISTORTIONS, distort


@pytest.fixture(scope="module")
def images(tiny_shapes):
    from lib.data import shapes

    return shapes.load_split(tiny_shapes, "test")["images"][:12]


def grey_u8(images):
    return np.rint(D.rgb2gray(images / 255.0) * 255).astype(np.uint8)


def test_registry_is_the_benchmarks_twelve():
    assert sorted(DISTORTIONS) == sorted([
        "colour", "contrast", "high-pass", "low-pass", "phase-scrambling", "power-equalisation", "false-colour",
        "rotation", "eidolonI", "eidolonII", "eidolonIII", "uniform-noise"])
    assert DISTORTIONS["eidolonII"].conditions[3] == "8-3-10"


@pytest.mark.parametrize("name", ["colour", "false-colour"])
def test_neutral_colour_conditions_are_the_identity(images, name):
    assert np.array_equal(distort(images, name, DISTORTIONS[name].neutral), images)


@pytest.mark.parametrize("name", ["contrast", "low-pass", "phase-scrambling", "power-equalisation", "rotation"])
def test_neutral_level_is_the_greyscale_control(images, name):
    """The benchmark's control condition of these sets is the greyscale image; grey images stay unchanged."""
    out = distort(images, name, DISTORTIONS[name].neutral)
    assert np.abs(out[..., 0].astype(int) - grey_u8(images)).max() <= 1
    assert np.array_equal(out[..., 0], out[..., 2])
    grey = np.repeat(grey_u8(images)[..., None], 3, axis=-1)
    assert np.abs(distort(grey, name, DISTORTIONS[name].neutral).astype(int) - grey).max() <= 1


def test_neutral_high_pass_and_uniform_noise_controls(images):
    grey = D.rgb2gray(images / 255.0)
    expected = np.clip(grey - grey.mean(axis=(1, 2), keepdims=True) + D.BG_GREY, 0, 1)
    assert np.abs(distort(images, "high-pass", "inf")[..., 0] / 255.0 - expected).max() <= 0.5 / 255 + 1e-9
    low_contrast = 0.35 + 0.3 * grey  # the noise set's control: greyscale at 30% contrast
    assert np.abs(distort(images, "uniform-noise", "0.0")[..., 0] / 255.0 - low_contrast).max() <= 0.5 / 255 + 1e-9


def _distance(a, b):
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


@pytest.mark.parametrize("name", ["contrast", "high-pass", "low-pass", "phase-scrambling", "uniform-noise"])
def test_strength_is_monotone_in_the_parameter(images, name):
    conditions = DISTORTIONS[name].conditions
    reference = distort(images, name, conditions[0])
    distances = [_distance(distort(images, name, c), reference) for c in conditions]
    assert distances[0] == 0
    assert all(b > a for a, b in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("name", ["eidolonI", "eidolonII", "eidolonIII"])
def test_eidolon_strength_is_monotone_in_reach(images, name):
    reference = distort(images, name, DISTORTIONS[name].conditions[0], eidolon_size=64, eidolon_fields=4)
    distances = [_distance(distort(images, name, c, eidolon_size=64, eidolon_fields=4), reference)
                 for c in DISTORTIONS[name].conditions[1::2]]  # reach 2, 8, 32, 128
    assert distances[0] > 0
    assert all(b > a for a, b in zip(distances, distances[1:])), distances


def test_coherence_orders_the_eidolons():
    """At equal reach, eidolon I (coherence 1: incoherent noise added at full weight) moves pixels most."""
    rng = np.random.default_rng(0)
    fat = (64, 64)
    levels = E.scale_levels(64)
    spread = [np.abs(np.stack(E.displacement_stack((4, *fat), levels, 16, c, 10 / 4, rng))).mean() for c in (1, .3, 0)]
    assert spread[0] > spread[1] > spread[2] > 0


def test_eidolon_scale_space_sums_to_the_finest_blur_and_reach_zero_reconstructs_it(images):
    grey = D.rgb2gray(images[:3] / 255.0) * 255
    fat, (dh, dw) = E.embed(grey)
    levels = E.scale_levels(64)
    assert len(levels) == 8 and levels[0] == pytest.approx(2 ** -0.5)
    layers = E.dog_scale_space(fat, levels)
    assert np.allclose(sum(layers), E.blur(fat, levels[0]), atol=1e-3)
    still = E.partially_coherent_disarray(grey, 0.0, 1.0, 10.0, np.random.default_rng(0))
    assert np.allclose(still, np.clip(E.blur(fat, levels[0])[:, dh:dh + 64, dw:dw + 64], 0, 255), atol=1e-2)
    # the finest blur (sigma 0.71) is close to the picture itself
    assert np.abs(still - grey).mean() < 8


def test_eidolon_fields_are_drawn_per_image_unless_shared():
    picture = np.random.default_rng(1).random((1, 32, 32, 3))
    twins = np.repeat(picture, 2, axis=0)
    per_image = E.eidolon(twins, 8.0, 1.0, 10.0, np.random.default_rng(0), size=32)
    shared = E.eidolon(twins, 8.0, 1.0, 10.0, np.random.default_rng(0), size=32, fields=1)
    assert not np.array_equal(per_image[0], per_image[1])
    assert np.array_equal(shared[0], shared[1])


def test_eidolon_at_another_working_size_keeps_the_shape():
    picture = np.random.default_rng(2).random((1, 40, 48, 3))
    out = E.eidolon(picture, 4.0, 0.3, 10.0, np.random.default_rng(0), size=96)
    assert out.shape == picture.shape and out.min() >= 0 and out.max() <= 1


def test_phase_scrambling_keeps_the_amplitude_spectrum():
    """Opposite shifts for conjugate frequencies keep the inverse transform real, so amplitudes are kept
    (the released code pairs the shifts wrongly and loses them with the imaginary part)."""
    rng = np.random.default_rng(0)
    images = 0.45 + 0.1 * rng.random((3, 32, 32, 3))  # low contrast: no clipping
    out = D.phase_scramble(images, 90, np.random.default_rng(1))
    grey = D.rgb2gray(images)
    assert np.allclose(np.abs(np.fft.fft2(out)), np.abs(np.fft.fft2(grey)), atol=1e-8)
    assert not np.allclose(out, grey, atol=1e-3)


def test_phase_scrambling_handles_odd_sizes():
    images = 0.45 + 0.1 * np.random.default_rng(0).random((2, 31, 33, 3))
    out = D.phase_scramble(images, 120, np.random.default_rng(1))
    assert np.allclose(np.abs(np.fft.fft2(out)), np.abs(np.fft.fft2(D.rgb2gray(images))), atol=1e-8)


def test_power_equalisation_gives_every_image_the_mean_spectrum():
    images = 0.45 + 0.1 * np.random.default_rng(0).random((4, 32, 32, 3))
    mean = D.mean_amplitude_spectrum(images)
    out = D.power_equalise(images, mean)
    for o in out:
        assert np.allclose(np.abs(np.fft.fftshift(np.fft.fft2(o))), mean, atol=1e-8)


def test_false_colour_keeps_greys_and_is_an_involution():
    grey = np.repeat(np.linspace(0.1, 0.9, 9)[None, :, None, None], 3, axis=3) * np.ones((1, 9, 4, 3))
    grey = np.rint(grey * 255) / 255
    assert np.abs(D.false_colour(grey) - grey).max() <= 2 / 255
    colours = np.rint((0.4 + 0.2 * np.random.default_rng(0).random((2, 8, 8, 3))) * 255) / 255
    once = D.false_colour(colours)
    assert np.abs(once - colours).max() > 10 / 255
    assert np.abs(D.false_colour(once) - colours).max() <= 3 / 255


def test_rotation_follows_the_benchmarks_definition(images):
    grey = grey_u8(images)
    assert np.array_equal(distort(images, "rotation", "90")[..., 0], np.stack([g.T[::-1, :] for g in grey]))
    assert np.array_equal(distort(images, "rotation", "270")[..., 0], np.stack([g[::-1, :].T for g in grey]))


def test_distort_is_seeded_and_validates_before_compute(images):
    a = distort(images, "uniform-noise", "0.2", seed=3)
    assert np.array_equal(a, distort(images, "uniform-noise", "0.2", seed=3))
    assert not np.array_equal(a, distort(images, "uniform-noise", "0.2", seed=4))
    with pytest.raises(ValueError, match="unknown distortion"):
        distort(images, "fog", "1")
    with pytest.raises(ValueError, match="c100"):
        distort(images, "contrast", "c99")
    with pytest.raises(ValueError, match="uint8"):
        distort(images.astype(float), "contrast", "c50")
