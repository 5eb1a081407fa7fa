"""shift_digits: each step against a closed form, and the named domains."""

import numpy as np
import pytest

from mtl_jax.data import load_digits, sample_digit_shift, shift_digits
from mtl_jax.data._domain_shift import DIGIT_DOMAINS


@pytest.fixture(scope="module")
def images():
    return load_digits().images[:20]


def test_rotation_by_90_degrees_is_a_quarter_turn(images):
    out = shift_digits(images, rotation=90.0)
    turned = [np.rot90(images, k, axes=(1, 2)) for k in (1, -1)]
    assert min(np.max(np.abs(out - t)) for t in turned) < 1e-5


def test_translate_blur_contrast_closed_form(images):
    x = images[..., 0]
    out = shift_digits(x, translate=(1, -1), blur=True, contrast=0.5, clip=False)
    r = np.roll(x, (1, -1), axis=(1, 2)).astype(np.float64)
    ref = 0.5 * (r + np.roll(r, 1, 1) + np.roll(r, 1, 2)) / 3.0
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_noise_is_seeded_clipped_and_inverted(images):
    a = shift_digits(images, noise=0.4, invert=True, seed=3)
    np.testing.assert_array_equal(a, shift_digits(images, noise=0.4, invert=True, seed=3))
    assert not np.array_equal(a, shift_digits(images, noise=0.4, invert=True, seed=4))
    assert a.min() >= 0.0 and a.max() <= 1.0
    eps = np.random.default_rng(3).normal(0.0, 0.4, images.shape)
    np.testing.assert_allclose(a, 1.0 - np.clip(images + eps, 0.0, 1.0), atol=1e-6)


def test_named_domains_and_sampled_shift(images):
    assert list(DIGIT_DOMAINS) == ["clean", "rotated", "noisy", "inverted"]
    np.testing.assert_array_equal(shift_digits(images, **DIGIT_DOMAINS["clean"]), images)
    rng = np.random.default_rng(0)
    shift = sample_digit_shift(rng)
    assert shift["clip"] is False and 0.6 <= shift["contrast"] <= 1.1
    assert 0.0 <= shift["noise"] <= 0.3
    out = shift_digits(images[..., 0], **shift, seed=rng)
    assert out.shape == images.shape[:3] and np.isfinite(out).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": -0.1}, "noise"),
        ({"contrast": 0.0}, "contrast"),
        ({"noise_dtype": np.int32}, "noise_dtype"),
    ],
)
def test_rejects_bad_arguments(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        shift_digits(images, **kwargs)
    with pytest.raises(ValueError, match="images"):
        shift_digits(images[0, ..., 0])
