"""Covariate-shifted digit domains: one image transform behind every shifted-digits set.

A target domain for domain adaptation and transfer built offline from
scikit-learn's 8×8 digits, in the spirit of the rotated, noisy and inverted
MNIST variants used by DANN (Ganin et al. 2016, https://arxiv.org/abs/1505.07818)
and MSTN (Xie et al. 2018, https://proceedings.mlr.press/v80/xie18c.html), and
of the randomly perturbed target domains of Learning to Transfer (Wei et al.
2018, https://proceedings.mlr.press/v80/wei18a.html).

:func:`shift_digits` applies a fixed shift; ``DIGIT_DOMAINS`` here names the
shifts of the ``shifted_digits`` builder; :func:`sample_digit_shift` draws the
random shift of a Learning-to-Transfer target domain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DIGIT_DOMAINS", "sample_digit_shift", "shift_digits"]

#: The domains of the ``shifted_digits`` builder, as :func:`shift_digits` keywords.
DIGIT_DOMAINS: dict[str, dict[str, Any]] = {
    "clean": {},
    "rotated": {"rotation": 30.0},
    "noisy": {"noise": 0.3},
    "inverted": {"invert": True},
}


def shift_digits(
    images: np.ndarray,
    *,
    translate: tuple[int, int] = (0, 0),
    blur: bool = False,
    rotation: float = 0.0,
    contrast: float = 1.0,
    noise: float = 0.0,
    clip: bool = True,
    invert: bool = False,
    seed: int | np.random.Generator = 0,
    noise_dtype: type = np.float64,
) -> np.ndarray:
    r"""Returns a shifted float32 copy of ``[N, H, W]`` or ``[N, H, W, C]`` images in ``[0, 1]``.

    Applied in this order, in float32:

    1. a cyclic translation by ``translate = (dy, dx)`` pixels;
    2. if ``blur``, the three-tap blur ``(x + x_{↓1} + x_{→1}) / 3`` (cyclic shifts);
    3. a rotation by ``rotation`` degrees about the centre (bilinear, same size,
       zeros outside the frame);
    4. ``contrast · x + ε`` with ``ε ~ N(0, noise²)`` drawn (in ``noise_dtype``) from
       ``seed``; the sum is rounded to float32 once;
    5. if ``clip``, clipping to ``[0, 1]``; if ``invert``, ``1 − x``.

    Args:
      images: ``[N, H, W]`` or ``[N, H, W, C]`` float images in ``[0, 1]``.
      translate: ``(dy, dx)`` integer pixel offsets.
      blur: apply the three-tap blur.
      rotation: angle in degrees.
      contrast: intensity scale (``> 0``).
      noise: noise standard deviation (``≥ 0``); no noise is drawn when 0.
      clip: clip to ``[0, 1]`` before inverting.
      invert: invert intensities.
      seed: an integer seed or a ``np.random.Generator`` (advanced by the draw).
      noise_dtype: ``np.float64`` adds the noise before rounding to float32;
        ``np.float32`` rounds the noise to float32 first (the MSTN reproduction's
        images).

    Returns:
      Images of the shape of ``images``, float32.

    Raises:
      ValueError: on images of another rank, a negative ``noise``, a
        non-positive ``contrast`` or a ``noise_dtype`` other than float32/float64.
    """
    x = np.asarray(images, np.float32)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {x.shape}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if contrast <= 0:
        raise ValueError(f"contrast must be > 0, got {contrast}")
    if np.dtype(noise_dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"noise_dtype must be np.float32 or np.float64, got {noise_dtype!r}")
    if tuple(translate) != (0, 0):
        x = np.roll(x, tuple(int(t) for t in translate), axis=(1, 2))
    if blur:
        x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2)) / 3.0
    if rotation:
        import scipy.ndimage

        x = scipy.ndimage.rotate(x, rotation, axes=(1, 2), reshape=False, order=1, mode="constant")
    if contrast != 1.0:
        x = x * contrast
    if noise:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x = x + rng.normal(0.0, noise, size=x.shape).astype(noise_dtype)
    if clip:
        x = np.clip(x, 0.0, 1.0)
    if invert:
        x = 1.0 - x
    return x.astype(np.float32)


def sample_digit_shift(rng: np.random.Generator) -> dict[str, Any]:
    """Draws the random shift of one Learning-to-Transfer target domain.

    A one-pixel translation in each axis (with probability 0.3), the three-tap
    blur (probability 0.5), a contrast in ``U(0.6, 1.1)`` and a noise level in
    ``U(0, 0.3)``; no clipping. Apply it with ``shift_digits(images, **shift,
    seed=rng)`` using the same generator, which then draws the noise.

    Args:
      rng: the generator the parameters are drawn from.

    Returns:
      Keyword arguments of :func:`shift_digits`.
    """
    shift: dict[str, Any] = {"clip": False}
    if rng.random() < 0.3:
        shift["translate"] = tuple(int(t) for t in rng.integers(-1, 2, size=2))
    shift["blur"] = bool(rng.random() < 0.5)
    shift["contrast"] = rng.uniform(0.6, 1.1)
    shift["noise"] = rng.uniform(0.0, 0.3)
    return shift
