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
family of simplex QPs solved by :func:`~mtl_jax.weighting.simplex_qp`'s algorithm
(diagonal rescaling, accelerated projected gradient with restarts, active-set
polish). With ``a = Gb`` and ``ρ = c‖g₀‖``, the optimality condition of the dual,
``a + ρ G w / ‖g_w‖ ∈ −N_Δ(w)``, says that ``w`` also solves the QP

    w(t) = argmin_{w ∈ Δ} t aᵀw + ½ wᵀGw      at the ``t > 0`` where  ‖g_{w(t)}‖ = ρ t.

``h(t) = ‖g_{w(t)}‖ − ρt`` changes sign once (``‖g_{w(t)}‖ / t`` is non-increasing,
by convexity of the value function of the norm-constrained problem) inside
``(0, max_k ‖g_k‖ / ρ]`` (``‖g_w‖ ≤ max_k ‖g_k‖`` on the simplex), so ``t`` is found by
a safeguarded search: on the support of the current ``w(t)`` the face minimiser is
affine in ``t`` (``w = w₀ + t v``, two right-hand sides of one bordered linear solve),
which turns ``h(t) = 0`` into a quadratic equation solved in closed form; steps
leaving the bracket of sign changes fall back to bisection. The loop stops when
``|h(t)| ≤ tol · ρt`` or after ``num_iters`` outer steps. The weights are then
``λ = b + ρ/‖g_w‖ · w``, which puts ``d`` exactly on the sphere ``‖d − g₀‖ = ρ``.

Precision: near-opposite gradients make ``‖g₀‖`` and ``‖g_w‖`` tiny differences of
large entries of ``G`` (condition numbers of ``10⁸`` in float32). The scalars that
decide the answer (``‖g₀‖²``, ``Gb``, ``‖g_w‖²`` and the face quadratics) are
therefore evaluated with error-free transformations (Dekker's product, Knuth's
two-sum; Ogita, Rump & Oishi, "Accurate Sum and Dot Product", SIAM J. Sci. Comput.
2005) as if in twice the working precision, and ``G`` is rescaled by a power of two
only, which is exact. Nothing falls back silently: :func:`cagrad_weights` can return
a ``converged`` flag (the balancer records it in its state).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax.weighting import _qp
from mtl_jax.weighting._gram import (
    all_present,
    as_gram,
    check_presence,
    nan_unless_finite,
    restrict_gram,
)

__all__ = ["cagrad_dual", "cagrad_weights"]

_QP_ITERS = 1000  # cap on the first-order iterations of each simplex QP


# ----------------------------------------------------------- compensated arithmetic


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a):
    c = 4097.0 * a if a.dtype == jnp.float32 else 134217729.0 * a  # 2^12+1, 2^27+1
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _sum2(p, e):
    """``Σ (p + e)`` over the last axis, compensated (pairwise two-sums)."""
    n = p.shape[-1]
    size = 1
    while size < n:
        size *= 2
    pad = [(0, 0)] * (p.ndim - 1) + [(0, size - n)]
    s, c = jnp.pad(p, pad), jnp.pad(e, pad)
    while s.shape[-1] > 1:
        s, err = _two_sum(s[..., 0::2], s[..., 1::2])
        c = c[..., 0::2] + c[..., 1::2] + err
    return s[..., 0] + c[..., 0]


def _quad2(u, g, v):
    """``uᵀ G v``, accurate as if computed in twice the working precision."""
    p1, e1 = _two_prod(g, v[None, :])
    p, e2 = _two_prod(u[:, None], p1)
    e = e2 + u[:, None] * e1
    return _sum2(jnp.reshape(p, (-1,)), jnp.reshape(e, (-1,)))


def _matvec2(g, v):
    """``G v``, each entry compensated."""
    p, e = _two_prod(g, v[None, :])
    return _sum2(p, e)


def _norm2(g, w):
    return jnp.sqrt(jnp.maximum(_quad2(w, g, w), 0.0))


# ------------------------------------------------------------------------- solver


def _prepare(gram, presence):
    """``G`` restricted to the present tasks, divided by a power of two (exact)."""
    g = restrict_gram(as_gram(gram), presence)
    big = jnp.max(jnp.abs(jnp.diagonal(g)))
    tiny = jnp.finfo(g.dtype).tiny
    nonzero = big > tiny
    scale = jnp.exp2(jnp.floor(jnp.log2(jnp.where(nonzero & jnp.isfinite(big), big, 1.0))))
    return g / scale, nonzero


def check_args(c, num_iters, tol, polish_iters) -> None:
    """Raises ``ValueError`` naming the first invalid argument of CAGrad's solver."""
    if isinstance(c, bool) or not isinstance(c, int | float) or not 0 <= c < float("inf"):
        raise ValueError(f"c must be a finite number >= 0, got {c!r}")
    _qp.check_solver_args(num_iters, tol, polish_iters)


def _face_affine(g, a, w, m):
    """On the support of ``w``: the face minimiser of ``t aᵀw + ½wᵀGw`` is ``w₀ + t v``."""
    k = g.shape[0]
    free = (w > 0.0) & m
    scale = jnp.max(jnp.diagonal(g))
    scale = jnp.where(scale > 0.0, scale, 1.0)
    both = free[:, None] & free[None, :]
    mat = jnp.where(both, g + 1e-7 * scale * jnp.eye(k, dtype=g.dtype), 0.0)
    mat = mat + jnp.diag(jnp.where(free, 0.0, 1.0).astype(g.dtype))
    ones = jnp.where(free, 1.0, 0.0).astype(g.dtype)
    full = jnp.concatenate(
        [
            jnp.concatenate([mat, ones[:, None]], axis=1),
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


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _dual(g, c, num_iters: int, qp_iters: int, tol: float, polish: int, m):
    """Returns ``(w, ρ, converged)``: the dual weights, ``c‖g₀‖``, and whether the
    search met its tolerance."""
    k = g.shape[0]
    n = jnp.maximum(jnp.sum(m), 1).astype(g.dtype)
    b = jnp.where(m, 1.0 / n, 0.0).astype(g.dtype)
    a = _matvec2(g, b)
    g0_sq = _quad2(b, g, b)
    rho = c * jnp.sqrt(jnp.maximum(g0_sq, 0.0))
    rho_ok = rho > 0.0
    rho_safe = jnp.where(rho_ok, rho, 1.0)
    g_max = jnp.sqrt(jnp.maximum(jnp.max(jnp.diagonal(g)), 0.0))
    t_hi0 = jnp.maximum(g_max / rho_safe, 1e-30)  # h(t_hi0) ≤ 0
    t0 = jnp.minimum(1.0 / jnp.maximum(c, 1e-6), t_hi0)  # w = b gives ρ/‖g_w‖ = c
    zeros = jnp.zeros((k,), g.dtype)

    def qp(t, w_init):
        return _qp._solve_one(g, t * a, zeros, w_init, True, qp_iters, tol, polish, m)

    def cond(state):
        _, _, _, _, it, done, _ = state
        return (it < num_iters) & ~done

    def body(state):
        t, w, lo, hi, it, _, _ = state
        w = qp(t, w)
        h = _norm2(g, w) - rho_safe * t
        lo = jnp.where(h > 0.0, t, lo)
        hi = jnp.where(h > 0.0, hi, t)
        ok = jnp.abs(h) <= tol * rho_safe * t
        # Closed-form root on the current face: α + 2βt + γt² = ρ²t².
        w0, v = _face_affine(g, a, w, m)
        al, be, ga = _quad2(w0, g, w0), _quad2(w0, g, v), _quad2(v, g, v)
        qa = rho_safe * rho_safe - ga
        disc = jnp.maximum(be * be + qa * al, 0.0)
        root = (be + jnp.sqrt(disc)) / jnp.where(qa > 0.0, qa, 1.0)
        bisect = jnp.where(lo > 0.0, jnp.sqrt(lo * hi), t / 4.0)
        bisect = jnp.where(hi >= t_hi0, jnp.minimum(4.0 * t, 0.5 * (t + hi)), bisect)
        inside = (qa > 0.0) & jnp.isfinite(root) & (root > lo) & (root < hi)
        t_next = jnp.where(inside, root, bisect)
        # Bracket collapsed to float resolution: the root is found as well as it can be.
        tight = hi - lo <= 4.0 * jnp.finfo(g.dtype).eps * hi
        done = ok | tight | ~rho_ok | ~jnp.isfinite(h)
        return jnp.where(ok, t, t_next), w, lo, hi, it + 1, done, ok | tight

    state = (t0, b, jnp.zeros((), g.dtype), t_hi0, 0, False, False)
    _, w, _, _, _, _, met = jax.lax.while_loop(cond, body, state)
    # ‖g₀‖² < 0: G is not positive semi-definite to working precision along b (rounding
    # of a near-singular G), so the ball is undefined: not converged, never silent.
    return w, rho, (met | ~rho_ok) & (g0_sq >= 0.0)


def _solve(gram, c, num_iters, tol, polish_iters, presence):
    m = check_presence(presence, jnp.shape(gram)[0])
    g, nonzero = _prepare(gram, m)
    k = g.shape[0]
    m = all_present(m, k)
    w, rho, met = _dual(
        g, jnp.asarray(c, g.dtype), num_iters, _QP_ITERS, float(tol), polish_iters, m
    )
    return g, w, rho, met, nonzero, m


def cagrad_dual(
    gram: jax.typing.ArrayLike,
    *,
    c: float = 0.5,
    num_iters: int = 50,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """The dual solution ``w ∈ Δ`` minimising ``wᵀGb + c sqrt(bᵀGb) sqrt(wᵀGw)``.

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      c: radius of the ball around the average gradient, relative to ``‖g₀‖``.
      num_iters: cap on the outer steps of the search over ``t`` (module docstring).
      tol: relative tolerance on ``h(t)`` and stopping tolerance of each simplex QP.
      polish_iters: cap on each simplex QP's active-set steps.
      presence: optional ``[K]`` boolean mask; the problem is that of the present
        tasks (``b = 1/|S|`` on them), absent tasks get weight 0.

    Returns:
      ``[K]`` weights on the probability simplex (uniform for a zero ``G``); all NaN
      if ``G`` has a non-finite entry among the present tasks.
    """
    check_args(c, num_iters, tol, polish_iters)
    g, w, _, _, _, _ = _solve(gram, c, num_iters, tol, polish_iters, presence)
    return nan_unless_finite(w, g)


def cagrad_weights(
    gram: jax.typing.ArrayLike,
    *,
    c: float = 0.5,
    rescale: int = 1,
    num_iters: int = 50,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
    return_converged: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
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
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0;
        ``g₀``, the ball and the dual are those of the present tasks (the
        ``|S|``-task problem). No task present gives zeros.
      return_converged: also return a scalar bool: whether the dual search met its
        tolerance (``|‖g_w‖ − ρt| ≤ tol·ρt``, or the bracket shrank to float
        resolution); ``False`` also when ``bᵀGb < 0`` (``G`` is not positive
        semi-definite to working precision, e.g. a near-singular Gram matrix
        rounded to float32, so ``‖g₀‖`` is undefined) or the weights are not finite.

    Returns:
      ``[K]`` weights ``λ = (b + c‖g₀‖/‖g_w‖ · w) / r`` (``b = 1/|S|`` on the present
      tasks); if ``g_w = 0`` exactly (a Pareto-stationary point) or ``g₀ = 0`` the
      correction is ``0`` (``λ = b/r``). All NaN if ``G`` has a non-finite entry
      among the present tasks. With ``return_converged``, ``(λ, converged)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import cagrad_weights
      >>> g = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # orthogonal, equal norms
      >>> [round(float(x), 3) for x in cagrad_weights(g, c=0.5, rescale=0)]
      [0.75, 0.75]
    """
    if rescale not in (0, 1, 2):
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
    check_args(c, num_iters, tol, polish_iters)
    div = {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]
    if c == 0:
        g0 = as_gram(gram)
        m = all_present(check_presence(presence, g0.shape[0]), g0.shape[0])
        n = jnp.maximum(jnp.sum(m), 1).astype(g0.dtype)
        lam = nan_unless_finite(jnp.where(m, 1.0 / n, 0.0).astype(g0.dtype), restrict_gram(g0, m))
        return (lam, jnp.ones((), bool)) if return_converged else lam
    g, w, rho, met, nonzero, m = _solve(gram, c, num_iters, tol, polish_iters, presence)
    n = jnp.maximum(jnp.sum(m), 1).astype(g.dtype)
    b = jnp.where(m, 1.0 / n, 0.0).astype(g.dtype)
    gw_norm = _norm2(g, w)
    ok = nonzero & (rho > 0.0) & (gw_norm > 0.0)
    lam = b + jnp.where(ok, rho / jnp.where(ok, gw_norm, 1.0), 0.0) * w
    lam = nan_unless_finite(lam / div, g)
    converged = met & jnp.all(jnp.isfinite(lam))
    return (lam, converged) if return_converged else lam
