"""Correction for label shift: importance-weighted losses and posterior re-weighting.

References:
  Lipton, Wang, Smola. Detecting and Correcting for Label Shift with Black Box
  Predictors. ICML 2018. https://arxiv.org/abs/1802.03916
  Saerens, Latinne, Decaestecker. Neural Computation 14(1), 2002.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mtl_jax.adaptation._bbse import _check_labels

__all__ = ["importance_weighted_cross_entropy", "reweight_posteriors"]


def importance_weighted_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, class_weights: ArrayLike
) -> jax.Array:
    r"""Importance-weighted ERM loss for label shift.

    .. math:: L = \frac1n \sum_l \hat w_{y_l}\, \bigl(-\log \mathrm{softmax}(z_l)_{y_l}\bigr).

    Its expectation under the source equals the target risk when ``ŵ = q/p``.
    Negative weights are clipped at zero (as BBSE does before re-training).

    Args:
      logits: ``[n, K]``.
      labels: ``[n]`` integer labels in ``0..K-1`` (checked when concrete).
      class_weights: ``[K]`` importance weights ``ŵ``.

    Returns:
      Scalar loss.
    """
    z, y, w = jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(class_weights)
    if z.ndim != 2 or y.shape != z.shape[:1] or w.shape != z.shape[-1:]:
        raise ValueError(
            f"need logits [n, K], labels [n], class_weights [K]; got {z.shape}, {y.shape}, "
            f"{w.shape}"
        )
    if z.shape[0] == 0:
        raise ValueError("logits is empty (n = 0): the mean loss is undefined")
    _check_labels("labels", y, z.shape[-1])
    w = jnp.maximum(w.astype(z.dtype), 0)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), y[:, None], axis=-1)[:, 0]
    return jnp.mean(w[y] * nll)


def reweight_posteriors(probs: ArrayLike, class_weights: ArrayLike) -> jax.Array:
    r"""Adapts source posteriors to the target prior: ``q(y|x) ∝ ŵ_y p(y|x)``.

    Args:
      probs: ``[n, K]`` source-model probabilities.
      class_weights: ``[K]`` importance weights (clipped at zero).

    Returns:
      ``[n, K]`` re-normalised probabilities.
    """
    p, w = jnp.asarray(probs), jnp.asarray(class_weights)
    if p.ndim != 2 or w.shape != p.shape[-1:]:
        raise ValueError(f"need probs [n, K] and class_weights [K], got {p.shape}, {w.shape}")
    un = p * jnp.maximum(w.astype(p.dtype), 0)[None, :]
    total = jnp.sum(un, axis=-1, keepdims=True)
    return jnp.where(total > 0, un / jnp.where(total > 0, total, 1), p)
