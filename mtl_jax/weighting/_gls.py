"""Geometric Loss Strategy (GLS): minimise the geometric mean of the task losses.

Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR 2019
Workshops, https://arxiv.org/abs/1904.08492.

The objective is ``L_GLS = (Π_k L_k)^{1/K}``. Its gradient is a weighted sum of the
task gradients, ``∇L_GLS = Σ_k w_k ∇L_k`` with ``w_k = L_GLS / (K L_k)``, computed in
log space so that large ``K`` does not overflow the product.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence

__all__ = ["gls_objective", "gls_weights"]


def _safe_log(losses: jax.typing.ArrayLike, eps: float) -> jax.Array:
    x = jnp.asarray(losses)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.log(jnp.maximum(x, eps))


def gls_objective(losses: jax.typing.ArrayLike, *, eps: float = 1e-8) -> jax.Array:
    """``(Π_k max(L_k, eps))^{1/K}``, the geometric mean of the losses."""
    return jnp.exp(jnp.mean(_safe_log(losses, eps)))


def gls_weights(
    losses: jax.typing.ArrayLike, *, eps: float = 1e-8, presence: jax.Array | None = None
) -> jax.Array:
    """Weights on the raw losses whose combination is the gradient of the geometric mean.

    With ``presence``, the geometric mean is over the present tasks ``S`` only:
    ``w_k = (Π_{j∈S} L_j)^{1/|S|} / (|S| L_k)`` for ``k ∈ S`` and 0 otherwise.

    Args:
      losses: ``[K]`` positive task losses.
      eps: losses are clipped below at ``eps`` (the geometric mean of a zero loss
        has an infinite derivative; the clip keeps the weights finite).
      presence: optional ``[K]`` bool array of the present tasks (``None``: all).

    Returns:
      ``[K]`` weights ``w_k = (Π_j L_j)^{1/K} / (K L_k)``; all equal to ``1/K`` when
      the losses are equal.
    """
    log_l = _safe_log(losses, eps)
    if presence is None:
        return jnp.exp(jnp.mean(log_l) - log_l) / log_l.shape[0]
    log_l = _presence.zero_absent(log_l, presence)
    n = jnp.maximum(_presence.num_present(presence, log_l.shape[0], log_l.dtype), 1.0)
    w = jnp.exp(_presence.masked_mean(log_l, presence) - log_l) / n
    return _presence.zero_absent(w, presence)
