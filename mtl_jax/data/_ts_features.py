"""A bank of per-window time-series features in JAX (DSMT-Nets' auxiliary targets).

Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027, build their
auxiliary tasks from automatically extracted time-series features of each
window (the authors used tsfresh). This module computes a fixed bank of such
features for every stream of every window with ``jax.numpy``, so it runs under
``jax.jit``/``jax.vmap`` and on an accelerator.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TS_FEATURE_NAMES", "time_series_features"]

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_LAGS = (1, 2, 4, 8, 16, 32)
_NUM_BANDS = 6
_EPS = 1e-8

TS_FEATURE_NAMES: tuple[str, ...] = (
    *("mean", "std", "min", "max", "range", "rms"),
    *(f"quantile_{q:g}" for q in _QUANTILES),
    *("iqr", "trend_slope", "trend_intercept", "skewness", "kurtosis"),
    *("mean_abs_change", "mean_change", "std_change", "max_abs_change"),
    *(f"autocorr_lag_{lag}" for lag in _LAGS),
    *(f"band_energy_{b}" for b in range(_NUM_BANDS)),
    *("spectral_centroid", "zero_crossing_rate", "fraction_above_mean"),
    *("argmax_position", "argmin_position", "abs_energy"),
)
"""Names of the features :func:`time_series_features` returns, in order (38)."""


def _one(x: jax.Array) -> jax.Array:
    """Features of one 1-D series ``x[T]``."""
    t = x.shape[0]
    mean = jnp.mean(x)
    c = x - mean
    var = jnp.mean(c**2)
    std = jnp.sqrt(var)
    qs = jnp.quantile(x, jnp.asarray(_QUANTILES, x.dtype))
    lo, hi = jnp.min(x), jnp.max(x)
    # Least-squares line through (i, x_i), i = 0..T-1.
    i = jnp.arange(t, dtype=x.dtype)
    ic = i - jnp.mean(i)
    slope = jnp.sum(ic * c) / jnp.sum(ic**2)
    intercept = mean - slope * jnp.mean(i)
    safe_std = jnp.where(std > _EPS, std, 1.0)
    z = jnp.where(std > _EPS, c / safe_std, 0.0)
    skew = jnp.mean(z**3)
    kurt = jnp.mean(z**4) - 3.0
    d = jnp.diff(x)
    # Autocorrelation r(l) = mean_i (c_i c_{i+l}) / var, 0 for a constant series.
    safe_var = jnp.where(var > _EPS**2, var, 1.0)
    acf = jnp.stack([jnp.mean(c[:-lag] * c[lag:]) for lag in _LAGS]) / safe_var
    acf = jnp.where(var > _EPS**2, acf, 0.0)
    # Relative spectral energy in equal-width bands of the one-sided spectrum (DC left out).
    power = jnp.abs(jnp.fft.rfft(c)) ** 2
    power = power[1:]
    edges = np.linspace(0, power.shape[0], _NUM_BANDS + 1).astype(int)
    total = jnp.sum(power)
    safe_total = jnp.where(total > _EPS, total, 1.0)
    sums = jnp.stack([jnp.sum(power[a:b]) for a, b in itertools.pairwise(edges)])
    bands = jnp.where(total > _EPS, sums / safe_total, 0.0)
    freqs = jnp.arange(1, power.shape[0] + 1, dtype=x.dtype) / t
    centroid = jnp.where(total > _EPS, jnp.sum(freqs * power) / safe_total, 0.0)
    sign = jnp.sign(c)
    zcr = jnp.mean((sign[1:] * sign[:-1]) < 0)
    return jnp.concatenate(
        [
            jnp.stack([mean, std, lo, hi, hi - lo, jnp.sqrt(jnp.mean(x**2))]),
            qs,
            jnp.stack([qs[3] - qs[1], slope, intercept, skew, kurt]),
            jnp.stack([jnp.mean(jnp.abs(d)), jnp.mean(d), jnp.std(d), jnp.max(jnp.abs(d))]),
            acf,
            bands,
            jnp.stack([centroid, zcr, jnp.mean(x > mean)]),
            jnp.stack([jnp.argmax(x) / (t - 1), jnp.argmin(x) / (t - 1), jnp.mean(x**2)]),
        ]
    ).astype(x.dtype)


def time_series_features(windows: jax.Array) -> jax.Array:
    r"""Computes the feature bank of every stream of every window.

    For each series :math:`x \in \mathbb{R}^T` (centred :math:`c = x - \bar x`,
    :math:`\sigma^2 = \overline{c^2}`) the bank holds: mean, standard deviation,
    minimum, maximum, range, RMS; the 5, 25, 50, 75 and 95 % quantiles and the
    interquartile range; the least-squares trend slope and intercept over
    :math:`i = 0..T-1`; skewness :math:`\overline{(c/\sigma)^3}` and excess
    kurtosis :math:`\overline{(c/\sigma)^4} - 3`; mean absolute change, mean
    change, standard deviation and largest absolute value of the first
    differences; the autocorrelation
    :math:`r(\ell) = \tfrac{1}{T-\ell}\sum_i c_i c_{i+\ell} / \sigma^2` at lags
    1, 2, 4, 8, 16, 32; the share of spectral energy
    :math:`|\mathrm{rfft}(c)|^2` (DC excluded) in six equal-width frequency bands
    and the spectral centroid (cycles per sample); the zero-crossing rate of
    :math:`c`; the fraction of samples above the mean; the relative positions of
    the maximum and minimum; and the mean energy :math:`\overline{x^2}` — 38 per
    stream (names in :data:`TS_FEATURE_NAMES`). Constant series give 0 for the
    scale-free features instead of NaN.

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.

    Args:
      windows: ``[N, S, T]`` float array of ``N`` windows with ``S`` streams of
        ``T >= 65`` samples (the largest autocorrelation lag is 32).

    Returns:
      ``[N, S, F]`` features with ``F = len(TS_FEATURE_NAMES)``.
    """
    windows = jnp.asarray(windows)
    if windows.ndim != 3:
        raise ValueError(f"windows must be [N, S, T]; got shape {windows.shape}")
    if windows.shape[-1] < 2 * max(_LAGS) + 1:
        raise ValueError(f"windows need at least {2 * max(_LAGS) + 1} samples; got {windows.shape}")
    return _bank(jnp.asarray(windows, jnp.float32))


_bank = jax.jit(jax.vmap(jax.vmap(_one)))
