"""FORUM: the multi-gradient of a constrained problem, first-order bilevel learning.

Ye, Lin, Cao, Zhang & Tsang, "A First-Order Multi-Gradient Algorithm for
Multi-Objective Bi-Level Optimization", ECAI 2024, https://arxiv.org/abs/2401.09257.
The pure part of one step: the weights ``λ`` of the upper-level gradients and the
multiplier ``ν`` of the value-function constraint, from Gram quantities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax.weighting._gram import nan_unless_finite
from mtl_jax.weighting._presence_mask import as_presence, project_present_simplex

__all__ = ["forum_weights"]


def forum_weights(
    gram: jax.typing.ArrayLike,
    cross: jax.typing.ArrayLike,
    q_sq_norm: jax.typing.ArrayLike,
    *,
    phi: float = 0.1,
    normalize: bool = True,
    presence: jax.typing.ArrayLike | None = None,
    num_iters: int = 2000,
) -> tuple[jax.Array, jax.Array]:
    """FORUM's weights ``λ`` of the upper-level gradients and the constraint's ``π``.

    FORUM replaces the lower-level problem ``ω ∈ argmin f(α, ·)`` by the constraint
    ``q(z) = f(α, ω) − f^*(α) ≤ 0`` on ``z = (α, ω)`` and moves ``z`` along the
    direction ``v`` that solves

    .. math::
        \\min_v\\; \\max_i ⟨∇F_i, v⟩ + ½‖v‖^2 \\quad \\text{s.t.}\\quad
        ⟨∇q, v⟩ ≤ −φ‖∇q‖^2,

    i.e. the steepest common descent of the upper-level objectives ``F_i`` that also
    decreases ``q`` at a rate ``φ‖∇q‖²``. Its Lagrangian dual is the quadratic
    programme over ``λ ∈ Δ`` (the simplex of the present tasks) and ``ν ≥ 0``

    .. math::
        \\min_{λ ∈ Δ,\\, ν ≥ 0}\\; ½\\Big\\|\\sum_i λ_i ∇F_i + ν ∇q\\Big\\|^2 − ν φ ‖∇q‖^2,

    whose minimiser gives ``v = −(Σ_i λ_i ∇F_i + ν ∇q)``. For a fixed ``λ`` the
    optimal multiplier is ``ν = max(Σ_i λ_i π_i, 0)`` with
    ``π_i = φ − ⟨∇q, ∇F_i⟩ / ‖∇q‖²``; this function returns ``λ`` and ``π`` so that
    a caller may average ``λ`` over steps (as FORUM does) before forming ``ν``.

    The programme is solved in float32 or wider by accelerated projected gradient
    (``num_iters`` steps, restarts when the objective rises) on
    ``(λ, √‖∇q‖² ν)``, whose Hessian has unit diagonal when ``normalize``.

    Args:
      gram: ``[K, K]`` Gram matrix of the upper-level gradients ``∇F_i``.
      cross: ``[K]`` ``⟨∇F_i, ∇q⟩``.
      q_sq_norm: ``‖∇q‖²`` (a scalar).
      phi: ``φ ≥ 0``, the required decrease of the constraint relative to ``‖∇q‖²``.
      normalize: replace each ``∇F_i`` by ``∇F_i / ‖∇F_i‖`` first (LibMTL's
        trainer does; the returned ``λ`` then weight the normalised gradients).
      presence: ``[K]`` bool, the upper-level objectives present; the others get
        ``λ_i = 0``.
      num_iters: iterations of the solver.

    Returns:
      ``(λ [K], π [K])``; ``π = 0`` when ``∇q = 0`` (the constraint is inactive).
      NaN if an input of a present task is not finite.

    Raises:
      ValueError: bad shapes, ``phi`` or ``num_iters``.
    References:
      Ye, Lin, Cao, Zhang & Tsang, "A First-Order Multi-Gradient Algorithm for
      Multi-Objective Bi-Level Optimization", ECAI 2024, https://arxiv.org/abs/2401.09257
    """
    g = jnp.asarray(gram)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be a square [K, K] matrix, got shape {g.shape}")
    k = g.shape[0]
    dtype = jnp.promote_types(g.dtype, jnp.float32)
    g = g.astype(dtype)
    c = jnp.asarray(cross).astype(dtype)
    if c.shape != (k,):
        raise ValueError(f"cross must have shape ({k},), got {c.shape}")
    n = jnp.asarray(q_sq_norm).astype(dtype)
    if n.shape != ():
        raise ValueError(f"q_sq_norm must be a scalar, got shape {n.shape}")
    if isinstance(phi, bool) or not isinstance(phi, int | float) or not phi >= 0:
        raise ValueError(f"phi must be a non-negative number, got {phi!r}")
    _validate.check_int("num_iters", num_iters)
    present = as_presence(presence, k)
    both = present[:, None] & present[None, :]
    g = jnp.where(both, g, 0.0)
    c = jnp.where(present, c, 0.0)
    if normalize:
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))
        norms = jnp.where(norms > jnp.finfo(dtype).tiny, norms, 1.0)
        g = g / (norms[:, None] * norms[None, :])
        c = c / norms
    active = n > jnp.finfo(dtype).tiny
    root = jnp.sqrt(jnp.where(active, n, 1.0))
    b = jnp.where(active, c / root, 0.0)
    # The problem in y = (λ, μ), μ = √n ν: ½ yᵀ M y + lᵀ y with unit-scaled ∇q.
    m = jnp.block([[g, b[:, None]], [b[None, :], jnp.ones((1, 1), dtype)]])
    lin = jnp.zeros((k + 1,), dtype).at[k].set(jnp.where(active, -phi * root, 0.0))
    step = 1.0 / jnp.maximum(jnp.trace(m), jnp.finfo(dtype).tiny)

    def project(y):
        lam = project_present_simplex(y[:k], present)
        mu = jnp.where(active, jnp.maximum(y[k], 0.0), 0.0)
        return jnp.concatenate([lam, mu[None]])

    def objective(y):
        return 0.5 * y @ (m @ y) + lin @ y

    y0 = project(jnp.concatenate([jnp.full((k,), 1.0, dtype), jnp.zeros((1,), dtype)]))

    def body(_, carry):
        y, z, t, f = carry
        y_new = project(z - step * (m @ z + lin))
        f_new = objective(y_new)
        restart = f_new > f
        t_new = jnp.where(restart, 1.0, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)))
        z_new = jnp.where(restart, y, y_new + ((t - 1.0) / t_new) * (y_new - y))
        y_keep = jnp.where(restart, y, y_new)
        return y_keep, z_new, t_new, jnp.where(restart, f, f_new)

    one = jnp.ones((), dtype)
    y, _, _, _ = jax.lax.fori_loop(0, num_iters, body, (y0, y0, one, objective(y0)))
    lam = jnp.where(present, y[:k], 0.0)
    pi = jnp.where(active & present, phi - c / jnp.where(active, n, 1.0), 0.0)
    lam = nan_unless_finite(lam, g, c, n)
    return lam, nan_unless_finite(pi, g, c, n)
