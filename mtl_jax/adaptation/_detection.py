"""Detecting label shift with two-sample tests on black-box predictions (BBSD).

Under label shift the distribution of a classifier's outputs changes iff the
label distribution does (for an invertible confusion matrix), so a two-sample
test on low-dimensional predictions replaces one on raw inputs.

References:
  Lipton, Wang, Smola. Detecting and Correcting for Label Shift with Black Box
  Predictors. ICML 2018. https://arxiv.org/abs/1802.03916
  Rabanser, Günnemann, Lipton. Failing Loudly: An Empirical Study of Methods for
  Detecting Dataset Shift. NeurIPS 2019. https://arxiv.org/abs/1810.11953
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from jax.typing import ArrayLike

__all__ = ["ShiftTestResult", "detect_label_shift"]


class ShiftTestResult(NamedTuple):
    """Outcome of :func:`detect_label_shift`."""

    p_value: float  # overall p-value (Bonferroni-corrected for "ks")
    shift_detected: bool  # p_value < alpha
    statistic: float  # max KS statistic, or the χ² statistic
    per_class_p_values: np.ndarray  # [K] raw KS p-values ("ks"); empty for "chi2"


def detect_label_shift(
    source_probs: ArrayLike,
    target_probs: ArrayLike,
    *,
    test: Literal["ks", "chi2"] = "ks",
    alpha: float = 0.05,
) -> ShiftTestResult:
    r"""Two-sample test for label shift on a classifier's predictions.

    ``test="ks"``: a two-sided Kolmogorov–Smirnov test per class on the predicted
    probabilities ``p̂_k(x)`` of source vs target samples, combined with the
    Bonferroni correction ``p = min(1, K · min_k p_k)``; the family-wise level is
    at most ``alpha``.

    ``test="chi2"``: Pearson's χ² test of homogeneity on the ``2 × K`` table of
    arg-max prediction counts (classes predicted in neither sample are dropped).

    The decision is ``p < alpha``. Runs on the host (SciPy), not under ``jit``.

    Args:
      source_probs: ``[n, K]`` predictions on held-out source data.
      target_probs: ``[m, K]`` predictions on target data.
      test: ``"ks"`` or ``"chi2"``.
      alpha: significance level in ``(0, 1)``.

    Returns:
      :class:`ShiftTestResult`.

    References:
      Lipton et al. ICML 2018, https://arxiv.org/abs/1802.03916;
      Rabanser et al. NeurIPS 2019, https://arxiv.org/abs/1810.11953
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    src = np.asarray(source_probs, np.float64)
    tgt = np.asarray(target_probs, np.float64)
    if src.ndim != 2 or tgt.ndim != 2 or src.shape[1] != tgt.shape[1]:
        raise ValueError(f"need [n, K] and [m, K] predictions, got {src.shape}, {tgt.shape}")
    if src.shape[0] < 2 or tgt.shape[0] < 2:
        raise ValueError("each sample needs at least two points")
    import scipy.stats  # here: importing it costs ~1 s, paid only by its users

    k = src.shape[1]
    if test == "ks":
        res = [scipy.stats.ks_2samp(src[:, c], tgt[:, c]) for c in range(k)]
        pvals = np.array([r.pvalue for r in res])
        p = float(min(1.0, k * pvals.min()))
        stat = float(max(r.statistic for r in res))
    elif test == "chi2":
        counts = np.stack(
            [np.bincount(src.argmax(1), minlength=k), np.bincount(tgt.argmax(1), minlength=k)]
        )
        counts = counts[:, counts.sum(0) > 0]
        if counts.shape[1] < 2:
            p, stat = 1.0, 0.0
        else:
            chi = scipy.stats.chi2_contingency(counts, correction=False)
            p, stat = float(chi.pvalue), float(chi.statistic)
        pvals = np.zeros(0)
    else:
        raise ValueError(f"test must be 'ks' or 'chi2', got {test!r}")
    return ShiftTestResult(p, p < alpha, stat, pvals)
