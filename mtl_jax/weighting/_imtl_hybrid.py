"""IMTL, both halves: IMTL-G on the gradients of the IMTL-L-scaled losses (LibMTL's ``IMTL``).

Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
https://openreview.net/forum?id=IMPnRXEWpvr (Section 3.3, "IMTL"). The losses are
scaled as in IMTL-L, ``L̃_k = e^{s_k} L_k − s_k``, so the task gradients become
``g̃_k = e^{s_k} g_k`` with Gram matrix ``G̃ = D G D``, ``D = diag(e^s)``; IMTL-G's
weights ``α`` (equal projections of the aggregate onto the unit gradients) are
computed on ``G̃`` and the update is ``Σ_k α_k g̃_k``: weights ``w_k = α_k e^{s_k}``
on the raw gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import as_gram
from mtl_jax.weighting._imtl import imtl_weights
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["imtl_hybrid_weights"]


def imtl_hybrid_weights(
    gram: jax.typing.ArrayLike,
    log_scales: jax.typing.ArrayLike,
    *,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """``w = α ∘ e^s`` with ``α`` IMTL-G's weights on ``G̃ = diag(e^s) G diag(e^s)``.

    Args:
      gram: ``[K, K]`` Gram matrix ``G`` of the raw task gradients.
      log_scales: ``[K]`` IMTL-L scales ``s``.
      presence: ``[K]`` bool, which tasks have data (``None``: all); IMTL-G is
        solved over the present tasks and an absent task's weight is 0.

    Returns:
      ``[K]`` weights on the raw gradients.
    """
    g = as_gram(gram)
    k = g.shape[0]
    p = as_presence(presence, k)
    e = jnp.where(p, jnp.exp(jnp.asarray(log_scales, g.dtype)), 0.0)
    scaled = jnp.where(p[:, None] & p[None, :], g * e[:, None] * e[None, :], 0.0)
    alpha = imtl_weights(scaled)
    return jnp.where(p, alpha * e, 0.0)
