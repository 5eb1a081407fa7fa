"""One jit-compatible solver for the small quadratic programmes of the Gram methods.

Every Gram weighting with a constraint solves, on a ``K × K`` matrix ``Q`` (a Gram
matrix or a rescaling of one), either the **simplex** problem

    min_x ½ xᵀQx + qᵀx   subject to   x ≥ 0,  Σ_k x_k = 1

(MGDA, Sener & Koltun 2018, https://arxiv.org/abs/1810.04650; CAGrad's dual, Liu et
al. 2021, https://arxiv.org/abs/2110.14048, through a one-dimensional search over a
family of such problems) or the **box** problem

    min_x ½ xᵀQx   subject to   x ≥ u

(UPGrad and DualProj: by Proposition 1 of Quinton & Rey 2024,
https://arxiv.org/abs/2406.16232, projecting ``Jᵀu`` onto the dual cone of the rows of
``J`` is ``Jᵀx`` with ``x`` the box solution for ``Q = J Jᵀ``).

Algorithm (all fixed-shape ``lax`` loops, so it runs under ``jit`` and ``vmap``):

1. **Diagonal rescaling.** ``x = D⁻¹y`` with ``D = diag(sqrt(Q_kk))``, so that the
   rescaled matrix ``Q' = D⁻¹QD⁻¹`` has a unit diagonal. Task gradients whose norms
   span three orders of magnitude give ``cond(Q)`` of ~10⁶ from the norms alone;
   ``Q'`` is the matrix of their cosines, whose conditioning does not depend on the
   norms. The simplex becomes the weighted simplex ``{y ≥ 0, Σ y_k / D_k = 1}``,
   onto which projection is still exact and sort-based.
2. **Accelerated projected gradient** (FISTA, step ``1/λ_max(Q')``) with the
   gradient-based adaptive restart of O'Donoghue & Candès (2015,
   https://arxiv.org/abs/1204.3982), until the stopping rule below holds or after
   ``num_iters`` iterations.
3. **Active-set polish.** From the first-order point, a primal active-set method
   (Nocedal & Wright, *Numerical Optimization*, Algorithm 16.3) solves the
   equality-constrained problem on the current free set exactly (one bordered
   ``(K+1) × (K+1)`` linear solve), steps as far towards it as feasibility allows,
   and frees the bound with the most negative multiplier once the free-set optimum
   is reached; at most ``polish_iters`` steps. The polished point is kept only if
   its residual is not larger than the first-order point's.

Stopping rule: the natural residual of the rescaled problem,
``r(y) = L ‖y − Π(y − ∇f(y)/L)‖_∞`` with ``L = λ_max(Q')`` (zero exactly at the
solution), is compared with ``tol · (‖y‖_∞ + ‖q'‖_∞)``. Because ``Q'`` has a unit
diagonal, that tolerance is relative to the scale of ``Q`` seen along each
coordinate, whatever the spread of the gradient norms. For the simplex problem
``r`` also bounds the Frank–Wolfe gap, i.e. how far ``⟨g_k, d⟩ ≥ ‖d‖²`` can fail
for MGDA.

Measured on random Jacobians whose row norms span 1 to 10³ (``K ∈ {2, 6, 20}``),
in float32 under ``jit``: the directions of MGDA, CAGrad, UPGrad and DualProj have
cosine ≥ 0.9999 to float64 references computed with ``quadprog``
(``tests/balancers/test_scale_spread.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax.weighting._gram import (
    all_present,
    as_gram,
    check_presence,
    nan_unless_finite,
    restrict_gram,
)

__all__ = ["box_qp", "check_solver_args", "normalize_gram", "simplex_qp"]

_HI = jax.lax.Precision.HIGHEST
_RIDGE = 1e-7  # ridge on the unit-diagonal free block of the polish's linear solve


def normalize_gram(
    gram: jax.typing.ArrayLike, *, reg_eps: float = 1e-4, presence: jax.Array | None = None
) -> jax.Array:
    """``G / tr(G) + reg_eps · I`` (``reg_eps · I`` alone when ``tr G`` is zero).

    The trace normalisation makes the problem scale-free; the ridge makes it strictly
    convex, so the solution is unique even when ``J`` has dependent rows. This is the
    regularisation of torchjd's projector, except that torchjd also zeroes ``G``
    whenever ``tr G < 1e-4`` in absolute terms; here only an exactly (sub-normally)
    zero trace is treated that way, so small gradients late in training keep their
    geometry. With a ``presence`` mask the absent tasks' rows and columns are zeroed
    first, so the trace is that of the present tasks' Gram matrix.
    """
    g = jnp.asarray(gram)
    g = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    g = restrict_gram(0.5 * (g + g.T), presence)
    tr = jnp.trace(g)
    ok = tr > jnp.finfo(g.dtype).tiny
    # A NaN trace keeps the NaNs (a zero trace is the only case mapped to 0).
    g = jnp.where(ok | jnp.isnan(tr), g / jnp.where(ok, tr, 1.0), 0.0)
    return g + reg_eps * jnp.eye(g.shape[0], dtype=g.dtype)


def _mv(q: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.matmul(q, y, precision=_HI)


def lu_solve(m: jax.Array, rhs: jax.Array) -> jax.Array:
    """``m⁻¹ rhs`` by a pivoted LU (``rhs`` is ``[n]`` or ``[n, r]``); cheaper to compile
    than ``jnp.linalg.solve``, whose differentiation rules are not needed here."""
    lu, _, perm = jax.lax.linalg.lu(m)
    x = rhs[perm]
    x = x[:, None] if x.ndim == 1 else x
    x = jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=True, unit_diagonal=True)
    x = jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=False)
    return x[:, 0] if rhs.ndim == 1 else x


def _project_weighted_simplex(z: jax.Array, a: jax.Array, m: jax.Array) -> jax.Array:
    """``argmin_{y ≥ 0, aᵀy = 1, y_k = 0 (k ∉ m)} ‖y − z‖`` for ``a > 0`` (exact, sort-based).

    ``y = max(z − τa, 0)`` on the coordinates in ``m``; with the breakpoints
    ``z_k / a_k`` of those coordinates sorted in decreasing order and the first ``j``
    free, ``τ_j = (Σ_{i≤j} a_i z_i − 1) / Σ_{i≤j} a_i²``; the free set is the largest
    ``j`` whose breakpoint exceeds ``τ_j``. The coordinates outside ``m`` sort last
    and add nothing to the sums; with ``m`` empty the result is 0.
    """
    ratio = z / a
    order = jnp.argsort(-jnp.where(m, ratio, -jnp.inf))
    ms = m[order]
    zs = jnp.where(ms, z[order], 0.0)
    as_ = jnp.where(ms, a[order], 0.0)
    den = jnp.cumsum(as_ * as_)
    tau = (jnp.cumsum(as_ * zs) - 1.0) / jnp.where(den > 0.0, den, 1.0)
    valid = ms & (ratio[order] > tau)
    j = jnp.max(jnp.where(valid, jnp.arange(z.shape[0]), 0))
    return jnp.where(m, jnp.maximum(z - tau[j] * a, 0.0), 0.0)


class _Problem:
    """The rescaled problem: ``Q'`` (unit diagonal), ``q'``, bounds, simplex weights.

    The variables outside the mask ``m`` are fixed at 0: their rows and columns of
    ``Q'`` are replaced by those of the identity (so the problem on the others is
    exactly the ``|m|``-variable problem, and ``λ_max(Q')`` is unchanged: the unit
    diagonal makes it ``≥ 1`` already), their linear terms and bounds by 0, and the
    projection keeps them at 0.
    """

    def __init__(self, q, lin, lower, simplex, m):
        k = q.shape[0]
        dg = jnp.diagonal(q)
        big = jnp.max(jnp.where(m, dg, 0.0))
        floor = jnp.where(big > 0.0, big, 1.0)
        d = jnp.sqrt(jnp.where(m & (dg > 1e-12 * floor), dg, floor))
        both = m[:, None] & m[None, :]
        eye = jnp.diag(jnp.where(m, 0.0, 1.0).astype(q.dtype))
        self.m = m
        self.d = d
        self.q = jnp.where(both, q / (d[:, None] * d[None, :]), 0.0) + eye
        self.lin = jnp.where(m, lin / d, 0.0)
        self.simplex = simplex
        self.a = 1.0 / d  # simplex: Σ_k a_k y_k = 1
        self.lower = jnp.zeros((k,), q.dtype) if simplex else jnp.where(m, lower * d, 0.0)
        lam = jnp.max(jnp.linalg.eigvalsh(self.q))
        self.lip = jnp.where(lam > jnp.finfo(q.dtype).tiny, lam, 1.0)
        self.scale_q = jnp.max(jnp.abs(self.lin))

    def grad(self, y):
        return _mv(self.q, y) + self.lin

    def project(self, z):
        if self.simplex:
            return _project_weighted_simplex(z, self.a, self.m)
        return jnp.where(self.m, jnp.maximum(z, self.lower), 0.0)

    def residual(self, y):
        """Natural residual ``L‖y − Π(y − ∇f(y)/L)‖_∞``, relative to the scale of ``y``."""
        step = self.project(y - self.grad(y) / self.lip)
        return self.lip * jnp.max(jnp.abs(y - step)) / self.scale(y)

    def scale(self, y):
        s = jnp.max(jnp.abs(y)) + self.scale_q
        return jnp.where(s > 0.0, s, 1.0)


def _apg(p: _Problem, y0: jax.Array, num_iters: int, tol: float) -> jax.Array:
    def cond(c):
        _, _, _, it, res = c
        return (it < num_iters) & (res > tol)

    def body(c):
        x, y, t, it, _ = c
        x_next = p.project(y - p.grad(y) / p.lip)
        res = p.lip * jnp.max(jnp.abs(x_next - y)) / p.scale(x_next)
        restart = jnp.dot(y - x_next, x_next - x) > 0.0
        t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        y_next = x_next + ((t - 1.0) / t_next) * (x_next - x)
        y_next = jnp.where(restart, x_next, y_next)
        t_next = jnp.where(restart, jnp.ones_like(t), t_next)
        return x_next, y_next, t_next, it + 1, res

    one = jnp.ones((), y0.dtype)
    x, *_ = jax.lax.while_loop(cond, body, (y0, y0, one, 0, jnp.inf * one))
    return x


def _free_set_solve(p: _Problem, free: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Minimiser on the face ``{y_k = l_k for k ∉ free}`` (and ``aᵀy = 1``); multiplier."""
    k = free.shape[0]
    both = free[:, None] & free[None, :]
    m = jnp.where(both, p.q + _RIDGE * jnp.eye(k, dtype=p.q.dtype), 0.0)
    m = m + jnp.diag(jnp.where(free, 0.0, 1.0).astype(p.q.dtype))
    lower_fixed = jnp.where(free, 0.0, p.lower)
    rhs = jnp.where(free, -p.lin - _mv(p.q, lower_fixed), p.lower)
    if p.simplex:
        border = jnp.where(free, p.a, 0.0)
        last = jnp.asarray(1.0, p.q.dtype) - jnp.dot(p.a, lower_fixed)
        corner = jnp.zeros((1, 1), p.q.dtype)
    else:
        border = jnp.zeros((k,), p.q.dtype)
        last = jnp.zeros((), p.q.dtype)
        corner = jnp.ones((1, 1), p.q.dtype)
    full = jnp.concatenate(
        [
            jnp.concatenate([m, border[:, None]], axis=1),
            jnp.concatenate([border[None, :], corner], axis=1),
        ],
        axis=0,
    )
    sol = lu_solve(full, jnp.concatenate([rhs, last[None]]))
    return sol[:k], -sol[k]  # Q y + q = ν a + μ with ν = −sol[k]


def _polish(p: _Problem, y0: jax.Array, num_iters: int, tol: float) -> jax.Array:
    k = y0.shape[0]

    def cond(c):
        _, _, it, done = c
        return (it < num_iters) & ~done

    def body(c):
        y, free, it, _ = c
        cand, nu = _free_set_solve(p, free)
        step = cand - y
        blocked = free & (cand < p.lower)
        ratio = jnp.where(blocked, (p.lower - y) / jnp.where(blocked, step, -1.0), jnp.inf)
        alpha = jnp.clip(jnp.min(ratio), 0.0, 1.0)
        feasible = ~jnp.any(blocked)
        # Infeasible: move to the first bound hit and fix it.
        hit = jnp.argmin(ratio)
        y_part = jnp.where(free, y + alpha * step, p.lower)
        y_part = y_part.at[hit].set(p.lower[hit])
        free_part = free.at[hit].set(False)
        # Feasible: accept; free the most negative multiplier, if any.
        mult = p.grad(cand) - (nu * p.a if p.simplex else 0.0)
        mult = jnp.where(free | ~p.m, jnp.inf, mult)
        worst = jnp.argmin(mult)
        optimal = mult[worst] >= -tol * p.scale(cand)
        free_full = free.at[worst].set(free[worst] | ~optimal)
        ok = jnp.all(jnp.isfinite(cand))
        y_next = jnp.where(feasible, cand, y_part)
        free_next = jnp.where(feasible, free_full, free_part)
        done = (feasible & optimal) | ~ok
        y_next = jnp.where(ok, y_next, y)
        return y_next, free_next, it + 1, done

    free0 = (y0 > p.lower) & p.m
    if p.simplex:  # the face must contain a point of the simplex
        free0 = jnp.where(jnp.any(free0), free0, p.m)
    y, *_ = jax.lax.while_loop(cond, body, (y0, free0, 0, jnp.zeros((), bool)))
    del k
    return y


def _solve_one(q, lin, lower, x0, simplex, num_iters, tol, polish_iters, m=None):
    m = jnp.ones(q.shape[:1], bool) if m is None else m
    p = _Problem(q, lin, lower, simplex, m)
    y0 = p.project(x0 * p.d)
    y = _apg(p, y0, num_iters, tol)
    if polish_iters:
        yp = _polish(p, y, polish_iters, tol)
        keep = jnp.all(jnp.isfinite(yp)) & (p.residual(yp) <= p.residual(y))
        y = jnp.where(keep, yp, y)
    return y / p.d


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _solve(q, lin, lower, x0, simplex, num_iters, tol, polish_iters, m):
    # Jitted so that eager callers (and un-jitted training steps) compile once per shape.
    fn = functools.partial(
        _solve_one, simplex=simplex, num_iters=num_iters, tol=tol, polish_iters=polish_iters, m=m
    )
    out = jax.vmap(fn, in_axes=(None, 0, 0, 0))(q, lin, lower, x0)
    # A non-finite entry among the present variables' data makes the solution NaN.
    both = m[:, None] & m[None, :]
    return nan_unless_finite(
        out, jnp.where(both, q, 0.0), jnp.where(m, lin, 0.0), jnp.where(m, lower, 0.0)
    )


def check_solver_args(num_iters, tol, polish_iters, reg_eps=None) -> None:
    """Raises ``ValueError`` naming the first invalid solver argument.

    The one validator of the QP solver's arguments, used by the weighting
    functions and by the balancers built on them (MGDA, UPGrad, DualProj, CAGrad).

    Args:
      num_iters: a positive int.
      tol: a positive finite float.
      polish_iters: a non-negative int.
      reg_eps: if not None, a non-negative finite float.
    """
    _validate.check_int("num_iters", num_iters)
    _validate.check_int("polish_iters", polish_iters, low=0)
    _validate.check_positive("tol", tol)
    if reg_eps is not None and (
        isinstance(reg_eps, bool)
        or not isinstance(reg_eps, int | float)
        or not 0 <= reg_eps < float("inf")
    ):
        raise ValueError(f"reg_eps must be a non-negative float, got {reg_eps!r}")


def box_qp(
    gram: jax.typing.ArrayLike,
    lower: jax.typing.ArrayLike,
    *,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Solves ``min_v ½ vᵀ G v`` subject to ``v ≥ lower``.

    KKT: ``v ≥ u``, ``Gv ≥ 0``, ``(v − u) ∘ Gv = 0``; ``Gv ≥ 0`` is the
    non-conflicting property of UPGrad/DualProj. Solved as described in the module
    docstring (rescaled FISTA with restart, then an active-set polish).

    Args:
      gram: a ``[K, K]`` symmetric positive semi-definite matrix (regularise a Gram
        matrix with :func:`normalize_gram` first when the solution must be unique).
      lower: ``[K]`` lower bounds ``u``, or a batch ``[..., K]`` of them (solved
        independently, vectorised).
      num_iters: cap on the accelerated projected-gradient iterations.
      tol: stopping tolerance on the rescaled natural residual (module docstring).
      polish_iters: cap on the active-set steps (0 disables polishing).
      presence: optional ``[K]`` boolean mask; the variables of absent (``False``)
        tasks are fixed at 0 and the problem is solved over the others, exactly as
        the problem restricted to them.

    Returns:
      The solutions ``v``, with ``lower``'s shape (all NaN if ``G`` or ``lower`` has a
      non-finite entry among the present variables).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import box_qp
      >>> v = box_qp(jnp.array([[1.0, -1.0], [-1.0, 2.0]]), jnp.array([1.0, 0.0]))
      >>> [round(float(x), 4) for x in v]
      [1.0, 0.5]
    """
    check_solver_args(num_iters, tol, polish_iters)
    g = as_gram(gram)
    k = g.shape[0]
    m = all_present(check_presence(presence, k), k)
    u = jnp.asarray(lower, g.dtype)
    if u.shape[-1:] != g.shape[:1]:
        raise ValueError(f"lower has shape {u.shape}, expected [..., {k}]")
    flat = jnp.reshape(u, (-1, k))
    x0 = jnp.maximum(flat, 0.0)
    out = _solve(g, jnp.zeros_like(flat), flat, x0, False, num_iters, tol, polish_iters, m)
    return jnp.reshape(out, u.shape)


def simplex_qp(
    gram: jax.typing.ArrayLike,
    lin: jax.typing.ArrayLike | None = None,
    *,
    init: jax.typing.ArrayLike | None = None,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Solves ``min_w ½ wᵀGw + qᵀw`` over the probability simplex.

    Args:
      gram: a ``[K, K]`` symmetric positive semi-definite matrix.
      lin: ``[K]`` linear term ``q`` (default zero: the min-norm point of MGDA), or a
        batch ``[..., K]`` of them.
      init: starting point(s), broadcastable to ``lin``'s shape (default uniform).
      num_iters: cap on the accelerated projected-gradient iterations.
      tol: stopping tolerance on the rescaled natural residual (module docstring).
      polish_iters: cap on the active-set steps (0 disables polishing).
      presence: optional ``[K]`` boolean mask; absent (``False``) tasks get weight 0
        and the simplex is that of the present tasks.

    Returns:
      ``[..., K]`` weights on the simplex. A zero ``G`` (and ``q``) gives uniform
      weights (over the present tasks); no task present gives zeros; a non-finite
      entry of ``G`` or ``q`` among the present tasks gives NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import simplex_qp
      >>> [round(float(x), 3) for x in simplex_qp(jnp.array([[1.0, 0.0], [0.0, 4.0]]))]
      [0.8, 0.2]
    """
    check_solver_args(num_iters, tol, polish_iters)
    g = as_gram(gram)
    k = g.shape[0]
    m = all_present(check_presence(presence, k), k)
    q = jnp.zeros((k,), g.dtype) if lin is None else jnp.asarray(lin, g.dtype)
    if q.shape[-1:] != (k,):
        raise ValueError(f"lin has shape {q.shape}, expected [..., {k}]")
    x0 = jnp.full(q.shape, 1.0 / k, g.dtype) if init is None else jnp.asarray(init, g.dtype)
    x0 = jnp.broadcast_to(x0, q.shape)
    flat = jnp.reshape(q, (-1, k))
    x0 = jnp.reshape(x0, (-1, k))
    out = _solve(g, flat, jnp.zeros_like(flat), x0, True, num_iters, tol, polish_iters, m)
    return jnp.reshape(out, q.shape)
