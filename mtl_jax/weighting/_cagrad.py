"""CAGrad: the dual of the conflict-averse direction problem, on the Gram matrix.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021, https://arxiv.org/abs/2110.14048.

CAGrad looks for ``d`` maximising the worst task's progress ``min_k ⟨g_k, d⟩`` in the
ball ``‖d − g₀‖ ≤ c ‖g₀‖`` around the average gradient ``g₀ = (1/K) Σ_k g_k``. Its
dual is ``min_{w ∈ Δ} F(w) = ⟨g_w, g₀⟩ + c ‖g₀‖ ‖g_w‖`` with ``g_w = Σ_k w_k g_k``,
and the direction is ``d = g₀ + c ‖g₀‖ / ‖g_w‖ · g_w``. Everything is a function of
``G = J Jᵀ``: ``⟨g_w, g₀⟩ = wᵀ G b``, ``‖g_w‖² = wᵀ G w`` with ``b = 1/K``.

Solver (the authors use ``scipy.optimize.minimize``/SLSQP, torchjd the CLARABEL
conic solver; neither runs under ``jit``): the dual is reduced to a one-dimensional
family of simplex QPs solved by :func:`~mtl_jax.weighting.simplex_qp`'s algorithm.
With ``a = Gb`` and ``ρ = c‖g₀‖``, the optimality condition of the dual,
``a + ρ G w / ‖g_w‖ ∈ −N_Δ(w)``, says that ``w`` also solves the QP

    w(t) = argmin_{w ∈ Δ} t aᵀw + ½ wᵀGw      at the ``t > 0`` where  ‖g_{w(t)}‖ = ρ t.

``h(t) = ‖g_{w(t)}‖ − ρt`` changes sign once (``‖g_{w(t)}‖ / t`` is non-increasing,
by convexity of the value function of the norm-constrained problem), so ``t`` is
found by a safeguarded search: on the support of the current ``w(t)`` the face
minimiser is affine in ``t`` (``w = w₀ + t v``, two right-hand sides of one bordered
linear solve), which turns ``h(t) = 0`` into a quadratic equation solved in closed
form; steps leaving the bracket of sign changes fall back to geometric bisection.
Once the support is right, the root is exact and the next QP confirms it. Then
``λ = b + w/t`` (since ``c‖g₀‖/‖g_w‖ = 1/t``). The loop stops when
``|h(t)| ≤ tol · ρt`` or after ``num_iters`` outer steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax.weighting import _qp
from mtl_jax.weighting._gram import as_gram

__all__ = ["cagrad_dual", "cagrad_weights"]

_QP_ITERS = 1000  # cap on the first-order iterations of each simplex QP


def _prepare(gram):
    g = as_gram(gram)
    lam = jnp.max(jnp.linalg.eigvalsh(g))
    tiny = jnp.finfo(g.dtype).tiny
    nonzero = lam > tiny
    return g / jnp.where(nonzero, lam, 1.0), nonzero


def _check(c, num_iters, tol, polish_iters):
    if not c >= 0:
        raise ValueError(f"c must be >= 0, got {c!r}")
    if not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive int, got {num_iters!r}")
    _qp._check_solver_args(1, tol, polish_iters)


def _face_affine(g, a, w):
    """On the support of ``w``: the face minimiser of ``t aᵀw + ½wᵀGw`` is ``w₀ + t v``."""
    k = g.shape[0]
    free = w > 0.0
    scale = jnp.max(jnp.diagonal(g))
    scale = jnp.where(scale > 0.0, scale, 1.0)
    both = free[:, None] & free[None, :]
    m = jnp.where(both, g + 1e-7 * scale * jnp.eye(k, dtype=g.dtype), 0.0)
    m = m + jnp.diag(jnp.where(free, 0.0, 1.0).astype(g.dtype))
    ones = jnp.where(free, 1.0, 0.0).astype(g.dtype)
    full = jnp.concatenate(
        [
            jnp.concatenate([m, ones[:, None]], axis=1),
            jnp.concatenate([ones[None, :], jnp.zeros((1, 1), g.dtype)], axis=1),
        ],
        axis=0,
    )
    zeros = jnp.zeros((k,), g.dtype)
    rhs = jnp.stack(
        [
            jnp.concatenate([zeros, jnp.ones((1,), g.dtype)]),
            jnp.concatenate([jnp.where(free, -a, 0.0), jnp.zeros((1,), g.dtype)]),
        ],
        axis=1,
    )
    sol = _qp.lu_solve(full, rhs)
    return sol[:k, 0], sol[:k, 1]


def _quad(u, g, v):
    return jnp.dot(u, jnp.matmul(g, v, precision=_qp._HI))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _dual(g: jax.Array, c: jax.Array, num_iters: int, qp_iters: int, tol: float, polish: int):
    """Returns ``(w, t)``: the dual weights and ``t = ‖g_w‖ / (c‖g₀‖)``."""
    k = g.shape[0]
    b = jnp.full((k,), 1.0 / k, g.dtype)
    a = jnp.matmul(g, b, precision=_qp._HI)
    rho = c * jnp.sqrt(jnp.maximum(b @ a, 0.0))
    rho_ok = rho > 1e-12
    rho_safe = jnp.where(rho_ok, rho, 1.0)
    t0 = 1.0 / jnp.maximum(c, 1e-6)  # w = b gives ρ/‖g_w‖ = c
    t_min, t_max = t0 * 1e-6, t0 * 1e6
    zeros = jnp.zeros((k,), g.dtype)

    def qp(t, w_init):
        return _qp._solve_one(g, t * a, zeros, w_init, True, qp_iters, tol, polish)

    def cond(state):
        _, _, _, _, it, done = state
        return (it < num_iters) & ~done

    def body(state):
        t, w, lo, hi, it, _ = state
        w = qp(t, w)
        s = jnp.sqrt(jnp.maximum(_quad(w, g, w), 0.0))
        h = s - rho_safe * t
        lo = jnp.where(h > 0.0, t, lo)
        hi = jnp.where(h > 0.0, hi, t)
        done = jnp.abs(h) <= tol * rho_safe * t
        # Closed-form root on the current face: α + 2βt + γt² = ρ²t².
        w0, v = _face_affine(g, a, w)
        al, be, ga = _quad(w0, g, w0), _quad(w0, g, v), _quad(v, g, v)
        qa = rho_safe * rho_safe - ga
        disc = jnp.maximum(be * be + qa * al, 0.0)
        root = (be + jnp.sqrt(disc)) / jnp.where(qa > 0.0, qa, 1.0)
        bisect = jnp.where(hi >= t_max, t * 4.0, jnp.where(lo <= t_min, t / 4.0, jnp.sqrt(lo * hi)))
        inside = (qa > 0.0) & jnp.isfinite(root) & (root > lo) & (root < hi)
        t_next = jnp.clip(jnp.where(inside, root, bisect), t_min, t_max)
        stuck = ((t <= t_min) & (h < 0.0)) | ((t >= t_max) & (h > 0.0))
        return jnp.where(done, t, t_next), w, lo, hi, it + 1, done | stuck | ~rho_ok

    t0 = jnp.asarray(t0, g.dtype)
    state = (t0, b, jnp.asarray(t_min, g.dtype), jnp.asarray(t_max, g.dtype), 0, False)
    t, w, _, _, _, _ = jax.lax.while_loop(cond, body, state)
    return w, t


def cagrad_dual(
    gram: jax.typing.ArrayLike,
    c: float = 0.5,
    *,
    num_iters: int = 50,
    tol: float = 1e-6,
    polish_iters: int = 20,
) -> jax.Array:
    """The dual solution ``w ∈ Δ`` minimising ``wᵀGb + c sqrt(bᵀGb) sqrt(wᵀGw)``.

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      c: radius of the ball around the average gradient, relative to ``‖g₀‖``.
      num_iters: cap on the outer steps of the search over ``t`` (module docstring).
      tol: relative tolerance on ``h(t)`` and stopping tolerance of each simplex QP.
      polish_iters: cap on each simplex QP's active-set steps.

    Returns:
      ``[K]`` weights on the probability simplex (uniform for a zero ``G``).
    """
    _check(c, num_iters, tol, polish_iters)
    g, _ = _prepare(gram)
    w, _ = _dual(g, jnp.asarray(c, g.dtype), num_iters, _QP_ITERS, float(tol), polish_iters)
    return w


def cagrad_weights(
    gram: jax.typing.ArrayLike,
    c: float = 0.5,
    *,
    rescale: int = 1,
    num_iters: int = 50,
    tol: float = 1e-6,
    polish_iters: int = 20,
) -> jax.Array:
    """CAGrad task weights: ``d = Σ_k λ_k g_k = g₀ + c‖g₀‖/‖g_w‖ · g_w`` (then rescaled).

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      c: radius of the ball around the average gradient, relative to ``‖g₀‖``
        (``c = 0`` gives the average gradient).
      rescale: as in the authors' code: ``0`` returns ``d``, ``1`` returns
        ``d / (1 + c²)`` (their default), ``2`` returns ``d / (1 + c)``.
      num_iters: cap on the outer steps of the dual solver (see :func:`cagrad_dual`).
      tol: the dual solver's relative tolerance.
      polish_iters: cap on the active-set steps of each simplex QP.

    Returns:
      ``[K]`` weights ``λ = (1/K + c‖g₀‖/‖g_w‖ · w) / r``; if ``g_w = 0`` (a
      Pareto-stationary point the search cannot leave) the correction is dropped
      (``λ = 1/(K r)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import cagrad_weights
      >>> g = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # orthogonal, equal norms
      >>> [round(float(x), 3) for x in cagrad_weights(g, 0.5, rescale=0)]
      [0.75, 0.75]
    """
    if rescale not in (0, 1, 2):
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
    _check(c, num_iters, tol, polish_iters)
    g, nonzero = _prepare(gram)
    k = g.shape[0]
    b = jnp.full((k,), 1.0 / k, g.dtype)
    if c == 0:
        return b
    w, t = _dual(g, jnp.asarray(c, g.dtype), num_iters, _QP_ITERS, float(tol), polish_iters)
    g0_norm = jnp.sqrt(jnp.maximum(_quad(b, g, b), 0.0))
    gw_norm = jnp.sqrt(jnp.maximum(_quad(w, g, w), 0.0))
    ok = nonzero & (g0_norm > 1e-12) & (gw_norm > 1e-6 * g0_norm)
    lam = b + jnp.where(ok, c * g0_norm / jnp.where(ok, gw_norm, 1.0), 0.0) * w
    del t
    return lam / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]
