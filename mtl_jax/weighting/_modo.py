"""MoDo: multi-objective gradient descent with a stochastic update of the MGDA weights.

Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning:
Optimization, Generalization and Conflict-Avoidance", JMLR 2024,
https://arxiv.org/abs/2305.20057 (Algorithm 1, eq. 2.9). Instead of solving the
MGDA problem ``min_{λ ∈ Δ} ½ ‖∇F(x) λ‖²`` at every step, MoDo takes one projected
stochastic gradient step on it,

    λ_{t+1} = Π_Δ(λ_t − γ (∇F(x_t; z_1)ᵀ ∇F(x_t; z_2) + ρ I) λ_t),

with two *independent* mini-batches ``z_1, z_2`` so that the product is an
unbiased estimate of ``∇F(x)ᵀ∇F(x)``, and descends along ``∇F(x_t; z_3) λ_{t+1}``.
On the task Jacobians the matrix is ``A = J_1 J_2ᵀ`` (``[K, K]``, not symmetric in
general); with one batch it is the Gram matrix ``G = J Jᵀ``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax.weighting._presence_mask import as_presence, project_present_simplex

__all__ = ["modo_step", "task_cross_gram"]


def modo_step(
    weights: jax.typing.ArrayLike,
    matrix: jax.typing.ArrayLike,
    *,
    gamma: float = 0.1,
    rho: float = 0.1,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """One MoDo weight step ``λ ← Π_Δ(λ − γ (A λ + ρ λ))``.

    Args:
      weights: ``[K]`` current weights ``λ_t``.
      matrix: ``[K, K]`` ``A = J_1 J_2ᵀ`` from two independent batches (or ``G``).
      gamma: step size ``γ > 0``.
      rho: ``ℓ₂`` regularisation ``ρ ≥ 0``.
      presence: ``[K]`` bool, which tasks have data (``None``: all). The step and
        the simplex are over the present tasks; an absent task keeps ``λ_k``.

    Returns:
      ``[K]`` new weights ``λ_{t+1}`` (on the simplex of the present tasks, the
      absent tasks' entries carried over: zero them before applying).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import modo_step
      >>> a = jnp.diag(jnp.array([1.0, 3.0]))
      >>> lam = modo_step(jnp.array([0.5, 0.5]), a, gamma=0.5, rho=0.0)
      >>> [round(float(x), 3) for x in lam]  # Π_Δ([0.25, -0.25])
      [0.75, 0.25]
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma!r}")
    if not rho >= 0:
        raise ValueError(f"rho must be non-negative, got {rho!r}")
    a = jnp.asarray(matrix)
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"matrix must be [K, K], got shape {a.shape}")
    lam = jnp.asarray(weights, a.dtype)
    p = as_presence(presence, a.shape[0])
    both = p[:, None] & p[None, :]
    a = jnp.where(both, a, 0.0)
    lam_p = jnp.where(p, lam, 0.0)
    grad = a @ lam_p + rho * lam_p
    new = project_present_simplex(lam_p - gamma * grad, p)
    return jnp.where(p, new, lam)


def task_cross_gram(jac_a: Any, jac_b: Any) -> jax.Array:
    """``A = J_a J_bᵀ`` (``[K, K]``) for two task Jacobians of the same structure.

    With ``J_a``, ``J_b`` the task Jacobians of two independent mini-batches,
    ``A`` is an unbiased estimate of the Gram matrix ``∇Fᵀ∇F`` (``J_a J_aᵀ`` is a
    biased one): the double-sampling matrix of MoDo and SDMGrad. Pass the leaves
    to balance (e.g. the shared ones) in both.

    Returns:
      ``[K, K]`` float (not symmetric in general).
    """
    la = jax.tree_util.tree_leaves(jac_a)
    lb = jax.tree_util.tree_leaves(jac_b)
    if jax.tree_util.tree_structure(jac_a) != jax.tree_util.tree_structure(jac_b) or not la:
        raise ValueError("jac_a and jac_b must be non-empty task Jacobians of the same structure")
    out = None
    for x, y in zip(la, lb):
        if x.shape != y.shape:
            raise ValueError(f"leaf shapes differ: {x.shape} and {y.shape}")
        k = x.shape[0]
        term = jnp.reshape(x, (k, -1)) @ jnp.reshape(y, (k, -1)).T
        out = term if out is None else out + term
    return out
