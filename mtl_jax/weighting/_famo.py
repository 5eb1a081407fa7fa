"""FAMO: Fast Adaptive Multitask Optimization.

Liu, Liang, Chen, Stone & Liu, NeurIPS 2023, https://arxiv.org/abs/2306.03792.

With logits ``ξ`` and ``z = softmax(ξ)`` the step descends
``Σ_k z_k log(L_k − b_k + eps) / c`` with ``c = Σ_k z_k / (L_k − b_k + eps)`` held
constant (``b`` = lower bounds of the losses, zero by default). Its gradient is
``Σ_k w_k ∇L_k`` with ``w_k = z_k / (c (L_k − b_k + eps))``, so ``Σ w = 1``. The logits then
follow ``ξ ← ξ − β (δ + γ ξ)`` (Adam in the authors' code) where
``δ = J_softmax(ξ)ᵀ (log(L_prev − b + eps) − log(L_now − b + eps))``: a task whose
loss fell less than the others gains weight.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence

__all__ = ["famo_logit_grad", "famo_weights"]


def _log_gap(losses, min_losses, eps):
    x = jnp.asarray(losses)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    b = jnp.zeros_like(x) if min_losses is None else jnp.asarray(min_losses, x.dtype)
    return jnp.log(jnp.maximum(x - b, 0.0) + eps)


def famo_weights(
    logits: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    *,
    min_losses: jax.typing.ArrayLike | None = None,
    eps: float = 1e-8,
    presence: jax.Array | None = None,
) -> jax.Array:
    """Weights on the raw losses, ``w_k = z_k / (c D_k)``, ``D = L − b + eps``, ``c = Σ z/D``.

    With ``presence``, ``z`` is the softmax of the present tasks' logits and ``c``
    sums over them; the absent tasks get 0.

    Args:
      logits: ``[K]`` FAMO logits ``ξ``.
      losses: ``[K]`` current task losses.
      min_losses: ``[K]`` lower bounds ``b`` of the losses (default 0).
      eps: added to the loss gaps before the logarithm, as in the authors' code.
      presence: optional ``[K]`` bool array of the present tasks (``None``: all).

    Returns:
      ``[K]`` non-negative weights summing to 1 (to 0 if no task is present).
    """
    if presence is None:
        z = jax.nn.softmax(jnp.asarray(logits))
        inv_d = jnp.exp(-_log_gap(losses, min_losses, eps)).astype(z.dtype)
        zd = z * inv_d
        return zd / jnp.sum(zd)
    z = _presence.masked_softmax(jnp.asarray(logits), presence)
    inv_d = jnp.exp(-_log_gap(_presence.zero_absent(losses, presence), min_losses, eps))
    zd = _presence.zero_absent(z * inv_d.astype(z.dtype), presence)
    total = jnp.sum(zd)
    return zd / jnp.where(total > 0, total, 1.0)


def famo_logit_grad(
    logits: jax.typing.ArrayLike,
    prev_losses: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    *,
    min_losses: jax.typing.ArrayLike | None = None,
    eps: float = 1e-8,
    presence: jax.Array | None = None,
) -> jax.Array:
    """The logit "gradient" ``δ = J_softmax(ξ)ᵀ (log D_prev − log D_now)``, shape ``[K]``.

    ``J_softmax(ξ)ᵀ v = z ⊙ (v − ⟨z, v⟩)``. Descending along ``δ`` moves weight
    towards the tasks whose log-loss decreased least. With ``presence`` (a ``[K]``
    bool array) the softmax is over the present tasks and the absent entries are 0.
    """
    if presence is not None:
        z = _presence.masked_softmax(jnp.asarray(logits), presence)
        gap = _log_gap(_presence.zero_absent(prev_losses, presence), min_losses, eps) - _log_gap(
            _presence.zero_absent(losses, presence), min_losses, eps
        )
        delta = _presence.zero_absent(gap.astype(z.dtype), presence)
        return _presence.zero_absent(z * (delta - jnp.sum(z * delta)), presence)
    z = jax.nn.softmax(jnp.asarray(logits))
    delta = (_log_gap(prev_losses, min_losses, eps) - _log_gap(losses, min_losses, eps)).astype(
        z.dtype
    )
    return z * (delta - jnp.sum(z * delta))
