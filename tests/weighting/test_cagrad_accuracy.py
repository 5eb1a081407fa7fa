"""CAGrad on near-singular Gram matrices (nearly opposite gradients), float32.

Reference: the authors' dual, min_{w ∈ Δ} wᵀGb + c‖g₀‖‖g_w‖, solved in float64 by SciPy's
SLSQP from several starts, on the very float32 Gram matrix the function receives (the
information a float32 Gram matrix holds is all any solver can use). Checked in the
metric of that matrix: the cosine between the directions d = Jᵀλ and the ball
constraint ‖d − g₀‖ = c‖g₀‖.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import mtl_jax as mtl
from mtl_jax.weighting import cagrad_weights

C = 0.5


def _reference(gg, c):
    k = gg.shape[0]
    b = np.full(k, 1.0 / k)
    rho = c * np.sqrt(b @ gg @ b)

    def obj(w):
        return w @ gg @ b + rho * np.sqrt(max(w @ gg @ w, 0.0) + 1e-300)

    best = None
    for x0 in [b, *np.eye(k)]:
        r = minimize(
            obj,
            x0,
            bounds=[(0, 1)] * k,
            constraints={"type": "eq", "fun": lambda w: 1 - w.sum()},
            method="SLSQP",
            options={"ftol": 1e-16, "maxiter": 2000},
        )
        if best is None or r.fun < best.fun:
            best = r
    w = best.x
    return b + rho / np.sqrt(w @ gg @ w) * w, rho


def _cases(n, seed=0):
    """Float32 Gram matrices of K ∈ {2, 3, 4} nearly opposite float32 gradients whose
    float64 value is positive definite with condition number ≤ 1e8."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = int(rng.integers(2, 5))
        g1 = rng.normal(size=12) * 10 ** rng.uniform(-1, 2)
        rows = [g1]
        for _ in range(1, k):
            r = rng.normal(size=12)
            r -= (r @ g1) / (g1 @ g1) * g1 * rng.uniform(0.5, 1.0)
            size = 10 ** rng.uniform(-4, -1.5) * np.linalg.norm(g1)
            rows.append(-g1 * 10 ** rng.uniform(-0.01, 0.01) + size * r / np.linalg.norm(r))
        jac = np.stack(rows).astype(np.float32)
        g32 = jac @ jac.T
        ev = np.linalg.eigvalsh(g32.astype(np.float64))
        if ev[0] > 0 and ev[-1] / ev[0] <= 1e8:
            out.append(g32)
    return out


def test_near_singular_gram_matches_float64_reference():
    worst_cos, worst_gap = 1.0, 0.0
    for g32 in _cases(40):
        g = g32.astype(np.float64)
        lam = np.asarray(cagrad_weights(jnp.asarray(g32), c=C, rescale=0), np.float64)
        ref, rho = _reference(g, C)
        cos = lam @ g @ ref / np.sqrt((lam @ g @ lam) * (ref @ g @ ref))
        b = np.full(len(lam), 1.0 / len(lam))
        gap = abs(np.sqrt(max((lam - b) @ g @ (lam - b), 0.0)) / rho - 1.0)
        worst_cos, worst_gap = min(worst_cos, cos), max(worst_gap, gap)
    assert worst_cos >= 0.999, worst_cos
    assert worst_gap <= 1e-3, worst_gap  # ‖d − g₀‖ = c‖g₀‖ within 0.1 %


def test_converged_flag_and_balancer_state():
    g32 = _cases(1, seed=3)[0]
    lam, ok = cagrad_weights(jnp.asarray(g32), c=C, return_converged=True)
    assert bool(ok) and np.all(np.isfinite(np.asarray(lam)))
    _, ok = cagrad_weights(jnp.asarray(g32), c=C, num_iters=1, return_converged=True)
    assert not bool(ok)  # one outer step cannot reach the tolerance: said, not hidden
    # The balancer records the flag in its (fixed-shape) state, also under jit.
    jac = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)}
    for iters, expected in [(50, True), (1, False)]:
        tx = mtl.balancers.cagrad(num_iters=iters, num_tasks=3)
        state = tx.init(None)
        assert state.converged.shape == () and bool(state.converged)
        _, state = jax.jit(tx.update)(jac, state, task_losses=jnp.ones(3))
        assert bool(state.converged) is expected


def test_nonfinite_gram_gives_nan_and_not_converged():
    g = jnp.array([[1.0, jnp.nan], [jnp.nan, 2.0]])
    lam, ok = cagrad_weights(g, c=C, return_converged=True)
    assert np.all(np.isnan(np.asarray(lam))) and not bool(ok)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_c_is_validated(bad):
    with pytest.raises(ValueError, match="c must"):
        cagrad_weights(jnp.eye(2), c=bad)
    with pytest.raises(ValueError, match="c must"):
        mtl.balancers.cagrad(c=bad)
