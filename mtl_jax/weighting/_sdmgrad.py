"""SDMGrad: stochastic direction-oriented multi-objective gradient descent.

Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and
Provable Stochastic Algorithms", NeurIPS 2023, https://arxiv.org/abs/2305.18409
(Algorithm 1). The direction stays close to a target ``g_0 = J w̃`` (the mean
gradient for uniform ``w̃``): the weights solve

    min_{w ∈ Δ} ½ ‖J (w + λ w̃)‖²,

by projected stochastic gradient steps whose gradient ``A (w + λ w̃)`` uses
``A = J_1 J_2ᵀ`` from two independent batches (double sampling: an unbiased
estimate of ``J Jᵀ``); the update is ``J_3 (w + λ w̃) / (1 + λ)``. As in the
authors' code (and LibMTL, torchjd), ``A`` is divided by the square of the mean
gradient norm ``(mean_k sqrt(A_kk))²`` before the inner solve (Section 6.1) and
the inner solver is SGD with momentum, restarted at every call but warm-started
from the previous ``w``.

Objective sampling (SDMGrad-OS, Algorithm 2): with many tasks, each step uses
the gradients of a random subset of ``n`` tasks only; the subset is drawn
uniformly without replacement and the others are treated as absent for that step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax.weighting._presence_mask import as_presence, project_present_simplex

__all__ = ["sdmgrad_step"]


def sdmgrad_step(
    weights: jax.typing.ArrayLike,
    matrix: jax.typing.ArrayLike,
    *,
    lambda_: float = 0.3,
    lr: float = 10.0,
    momentum: float = 0.5,
    num_iters: int = 20,
    pref_vector: jax.typing.ArrayLike | None = None,
    presence: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """SDMGrad's inner solve: ``num_iters`` projected momentum-SGD steps on ``w``.

    With ``Â = A / ((mean_k sqrt(max(A_kk, 0)))² + 10⁻⁸)``, each step is
    ``v ← μ v + Â (w + λ w̃)`` (``v`` starting at the first gradient) and
    ``w ← Π_Δ(w − η v)``.

    Args:
      weights: ``[K]`` warm start ``w`` (the previous call's result).
      matrix: ``[K, K]`` ``A = J_1 J_2ᵀ`` from two independent batches (or ``G``).
      lambda_: ``λ ≥ 0``, the pull towards the target direction ``J w̃``.
      lr: inner step size ``η > 0``.
      momentum: ``μ ∈ [0, 1)``.
      num_iters: inner steps (≥ 1).
      pref_vector: ``[K]`` ``w̃`` (default uniform over the present tasks).
      presence: ``[K]`` bool, which tasks have data (``None``: all); the solve is
        over the present tasks and an absent task keeps its ``w_k``.

    Returns:
      ``(w, weights)``: the new inner weights ``w`` (state to carry) and the task
      weights to apply, ``(w + λ w̃) / (1 + λ)`` on the present tasks, 0 elsewhere.
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not lambda_ >= 0:
        raise ValueError(f"lambda_ must be non-negative, got {lambda_!r}")
    _validate.check_int("num_iters", num_iters)
    a = jnp.asarray(matrix)
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"matrix must be [K, K], got shape {a.shape}")
    k = a.shape[0]
    p = as_presence(presence, k)
    pf = p.astype(a.dtype)
    n = jnp.maximum(jnp.sum(pf), 1.0)
    if pref_vector is None:
        target = pf / n
    else:
        target = jnp.where(p, jnp.asarray(pref_vector, a.dtype), 0.0)
        if target.shape != (k,):
            raise ValueError(f"pref_vector must have shape ({k},), got {target.shape}")
    a = jnp.where(p[:, None] & p[None, :], a, 0.0)
    scale = jnp.sum(jnp.sqrt(jnp.maximum(jnp.diagonal(a), 0.0))) / n
    a = a / (scale**2 + 1e-8)
    w0 = jnp.asarray(weights, a.dtype)
    w = jnp.where(p, w0, 0.0)
    w = _inner_solve(
        a, w, target, p, float(lambda_), float(lr), float(momentum), num_iters=num_iters
    )
    applied = jnp.where(p, (w + lambda_ * target) / (1.0 + lambda_), 0.0)
    return jnp.where(p, w, w0), applied


# Compiled once per shape and hyperparameters: called eagerly (outside a jit), the
# inner loop would otherwise be traced and compiled again at every call.
@functools.partial(jax.jit, static_argnums=(4, 5, 6), static_argnames=("num_iters",))
def _inner_solve(a, w, target, p, lambda_, lr, momentum, *, num_iters):
    def body(i, carry):
        w, v = carry
        g = a @ (w + lambda_ * target)
        v = jnp.where(i == 0, g, momentum * v + g)
        return project_present_simplex(w - lr * v, p), v

    w, _ = jax.lax.fori_loop(0, num_iters, body, (w, jnp.zeros_like(w)))
    return w
