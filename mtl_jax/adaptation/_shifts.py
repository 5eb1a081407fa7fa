"""Simulated label shifts: tweak-one and Dirichlet target priors, and resampling.

References:
  Lipton, Wang, Smola. Detecting and Correcting for Label Shift with Black Box
  Predictors. ICML 2018 (section 6). https://arxiv.org/abs/1802.03916
"""

from __future__ import annotations

import numpy as np

__all__ = ["dirichlet_shift", "sample_with_label_distribution", "tweak_one_shift"]


def tweak_one_shift(num_classes: int, *, cls: int, rho: float) -> np.ndarray:
    """Target prior with ``q(y = cls) = rho`` and the rest spread uniformly."""
    if num_classes < 2 or not 0 <= cls < num_classes:
        raise ValueError(f"need num_classes >= 2 and 0 <= cls < num_classes, got {cls}")
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    q = np.full(num_classes, (1.0 - rho) / (num_classes - 1))
    q[cls] = rho
    return q


def dirichlet_shift(
    num_classes: int, *, alpha: float, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """Target prior drawn from ``Dirichlet(alpha · 1)`` (small alpha: severe shift).

    ``seed`` is an integer or a ``np.random.Generator``, which the draw advances (so
    repeated calls with one generator give different priors).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return np.random.default_rng(seed).dirichlet(np.full(num_classes, alpha))


def sample_with_label_distribution(
    labels: np.ndarray, dist: np.ndarray, *, n: int, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """Indices of ``n`` draws (with replacement) whose labels follow ``dist``.

    Each draw picks a class from ``dist`` and then a uniformly random example of
    that class, so ``p(x | y)`` is kept (a pure label shift). ``seed`` is an integer
    or a ``np.random.Generator``, which the draws advance.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    dist = np.asarray(dist, np.float64)
    k = dist.shape[0]
    if np.any(dist < 0) or not np.isclose(dist.sum(), 1.0):
        raise ValueError(f"dist must be a probability vector, got {dist}")
    by_class = [np.flatnonzero(labels == c) for c in range(k)]
    if any(len(ix) == 0 and dist[c] > 0 for c, ix in enumerate(by_class)):
        raise ValueError("dist puts mass on a class with no examples")
    ys = rng.choice(k, size=n, p=dist / dist.sum())
    out = np.empty(n, np.int64)
    for c in range(k):
        sel = ys == c
        if sel.any():
            out[sel] = rng.choice(by_class[c], size=int(sel.sum()))
    return out
