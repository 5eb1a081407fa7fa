"""Smooth Tchebycheff (STCH) scalarisation of the task losses.

Lin, Zhang, Yang, Zhang & Zhang, "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML 2024, https://arxiv.org/abs/2402.19078.

The Tchebycheff scalarisation ``max_k (f_k − z_k)`` is smoothed to
``μ log Σ_k exp((f_k − z_k) / μ)``. For multi-task learning the authors' code
uses the normalised log-losses ``f_k = log(L_k / n_k)`` (``n`` = a nadir vector,
the mean losses of a warm-up phase), ideal point 0 and scales the objective
by ``K``: ``L_STCH = K μ logsumexp(log(L / n) / μ)``. Its gradient is
``Σ_k w_k ∇L_k`` with ``w_k = K softmax(log(L / n) / μ)_k / L_k``; the weights
concentrate on the worst-normalised task as ``μ → 0`` and become ``1/L_k``
(``Σ_k log L_k``, up to the factor ``K·softmax``) as ``μ`` grows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence

__all__ = ["stch_objective", "stch_weights"]


def _normalised_log(losses, nadir, eps):
    x = jnp.asarray(losses)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    n = jnp.ones_like(x) if nadir is None else jnp.asarray(nadir, x.dtype)
    safe = jnp.maximum(x, eps)
    return jnp.log(safe) - jnp.log(jnp.maximum(n, eps)), safe


def stch_objective(
    losses: jax.typing.ArrayLike,
    *,
    nadir: jax.typing.ArrayLike | None = None,
    mu: float = 1.0,
    eps: float = 1e-8,
) -> jax.Array:
    """``K μ logsumexp(log(L / n) / μ)`` with losses and nadir clipped below at ``eps``."""
    u, _ = _normalised_log(losses, nadir, eps)
    return u.shape[0] * mu * jax.nn.logsumexp(u / mu)


def stch_weights(
    losses: jax.typing.ArrayLike,
    *,
    nadir: jax.typing.ArrayLike | None = None,
    mu: float = 1.0,
    eps: float = 1e-8,
    presence: jax.Array | None = None,
) -> jax.Array:
    """Weights on the raw losses: ``w_k = K softmax(log(L / n) / μ)_k / L_k``.

    With ``presence``, the objective is over the present tasks ``S`` only: ``K`` is
    replaced by ``|S|``, the softmax runs over ``S`` and the absent tasks get 0.

    Args:
      losses: ``[K]`` positive task losses.
      nadir: ``[K]`` nadir (normalising) vector ``n``; ``None`` means ones.
      mu: the smoothing parameter ``μ > 0``.
      eps: losses and nadir are clipped below at ``eps``.
      presence: optional ``[K]`` bool array of the present tasks (``None``: all).

    Returns:
      ``[K]`` weights with ``Σ_k w_k L_k = K`` (``|S|`` with ``presence``).
    """
    if presence is None:
        u, safe = _normalised_log(losses, nadir, eps)
        return u.shape[0] * jax.nn.softmax(u / mu) / safe
    u, safe = _normalised_log(_presence.zero_absent(losses, presence), nadir, eps)
    n = _presence.num_present(presence, u.shape[0], u.dtype)
    w = n * _presence.masked_softmax(u / mu, presence) / safe
    return _presence.zero_absent(w, presence)
