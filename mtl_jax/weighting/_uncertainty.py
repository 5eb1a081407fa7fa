"""Homoscedastic uncertainty weighting.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", CVPR 2018, https://arxiv.org/abs/1705.07115.

With learnable ``s_k = log σ_k²`` the joint objective is (the paper's regression
form, eq. 7) ``Σ_k ½ exp(−s_k) L_k + ½ s_k``: the task weights are
``w_k = ½ exp(−s_k)`` and ``∂/∂s_k = ½ − ½ exp(−s_k) L_k``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence

__all__ = ["uncertainty_log_variance_grad", "uncertainty_objective", "uncertainty_weights"]


def uncertainty_weights(
    log_variances: jax.typing.ArrayLike, *, presence: jax.Array | None = None
) -> jax.Array:
    """``w_k = ½ exp(−s_k)`` for log-variances ``s``; 0 for the tasks absent in ``presence``."""
    return _presence.zero_absent(0.5 * jnp.exp(-jnp.asarray(log_variances)), presence)


def uncertainty_objective(
    log_variances: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    *,
    presence: jax.Array | None = None,
) -> jax.Array:
    """``Σ_k ½ exp(−s_k) L_k + ½ s_k``, the sum over the present tasks with ``presence``."""
    s = jnp.asarray(log_variances)
    if presence is None:
        return jnp.sum(0.5 * jnp.exp(-s) * jnp.asarray(losses, s.dtype) + 0.5 * s)
    losses = _presence.zero_absent(jnp.asarray(losses, s.dtype), presence)
    return jnp.sum(_presence.zero_absent(0.5 * jnp.exp(-s) * losses + 0.5 * s, presence))


def uncertainty_log_variance_grad(
    log_variances: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    *,
    presence: jax.Array | None = None,
) -> jax.Array:
    """Closed-form ``∂/∂s`` of :func:`uncertainty_objective`: ``½ − ½ exp(−s) L``.

    With ``presence`` (a ``[K]`` bool array) the objective sums over the present
    tasks, so an absent task's entry is 0.
    """
    s = jnp.asarray(log_variances)
    if presence is None:
        return 0.5 - 0.5 * jnp.exp(-s) * jnp.asarray(losses, s.dtype)
    losses = _presence.zero_absent(jnp.asarray(losses, s.dtype), presence)
    return _presence.zero_absent(0.5 - 0.5 * jnp.exp(-s) * losses, presence)
