"""Dynamic Weight Average (DWA): weights from the rate at which each loss falls.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
https://arxiv.org/abs/1803.10704 (eq. 7). With ``r_k = L_k(t−1) / L_k(t−2)`` the
weights are ``w_k = K · softmax(r / T)_k``: a task whose loss decreased least
(ratio near or above 1) gets the largest weight. The weights sum to ``K``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence

__all__ = ["dwa_weights"]


def dwa_weights(
    prev_losses: jax.typing.ArrayLike,
    prev_prev_losses: jax.typing.ArrayLike,
    *,
    temperature: float = 2.0,
    presence: jax.Array | None = None,
) -> jax.Array:
    """``w = K · softmax(r / T)`` with ``r_k = L_k(t−1) / L_k(t−2)``.

    With ``presence``, the softmax is over the present tasks ``S`` and scaled by
    ``|S|``; the absent tasks get 0.

    Args:
      prev_losses: ``[K]`` losses one step (or epoch) ago, ``L(t−1)``.
      prev_prev_losses: ``[K]`` losses two steps (or epochs) ago, ``L(t−2)``.
      temperature: the softmax temperature ``T > 0``; large ``T`` tends to equal weights.
      presence: optional ``[K]`` bool array of the present tasks (``None``: all).

    Returns:
      ``[K]`` weights summing to ``K``. A zero ``L_k(t−2)`` gives the ratio 1.
    """
    prev = jnp.asarray(prev_losses)
    dtype = jnp.promote_types(prev.dtype, jnp.float32)
    prev = prev.astype(dtype)
    prev_prev = jnp.asarray(prev_prev_losses, dtype)
    ok = prev_prev != 0
    ratio = jnp.where(ok, prev / jnp.where(ok, prev_prev, 1.0), 1.0)
    k = prev.shape[0]
    if presence is None:
        return k * jax.nn.softmax(ratio / temperature)
    n = _presence.num_present(presence, k, dtype)
    return n * _presence.masked_softmax(ratio / temperature, presence)
