"""CAGrad: torchjd's CAGrad (conic solver), the authors' SciPy/SLSQP formulation, and the
paper's primal guarantee (better worst-task progress inside the ball around g₀)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import mtl_jax as mtl
from mtl_jax.weighting import cagrad_weights

J_TORCHJD = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _scipy_cagrad(jac, c):
    """The authors' formulation (Cranial-XIX/CAGrad), re-solved with SLSQP in float64."""
    k = jac.shape[0]
    gg = jac @ jac.T
    b = np.ones(k) / k
    rho = c * np.sqrt(b @ gg @ b)
    obj = lambda w: w @ gg @ b + rho * np.sqrt(w @ gg @ w + 1e-12)
    res = minimize(
        obj,
        b,
        bounds=[(0, 1)] * k,
        constraints={"type": "eq", "fun": lambda w: 1 - w.sum()},
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    gw = res.x @ jac
    return jac.mean(0) + rho / np.linalg.norm(gw) * gw


def test_matches_torchjd():
    torch = pytest.importorskip("torch")
    pytest.importorskip("cvxpy")
    torchjd_agg = pytest.importorskip("torchjd.aggregation")
    rng = np.random.default_rng(0)
    for jac in [J_TORCHJD, rng.normal(size=(3, 8)), rng.normal(size=(5, 4))]:
        expected = torchjd_agg.CAGrad(c=0.5)(torch.tensor(jac)).numpy()
        tx = mtl.balancers.cagrad(c=0.5, rescale=0)
        out, _ = jax.jit(tx.update)(
            {"w": jnp.asarray(jac, jnp.float32)}, tx.init(None), task_losses=jnp.ones(len(jac))
        )
        np.testing.assert_allclose(out["w"], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
def test_matches_scipy_and_rescale(c):
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(4, 10)) + 0.5 * rng.normal(size=(1, 10))
    w = np.asarray(cagrad_weights(jnp.asarray(jac @ jac.T, jnp.float32), c=c, rescale=0))
    np.testing.assert_allclose(w @ jac, _scipy_cagrad(jac, c), rtol=1e-3, atol=1e-4)
    w1 = np.asarray(cagrad_weights(jnp.asarray(jac @ jac.T, jnp.float32), c=c))
    np.testing.assert_allclose(w1, w / (1 + c * c), rtol=1e-5)


def test_primal_property():
    rng = np.random.default_rng(2)
    jac = rng.normal(size=(3, 6)) * np.array([[1.0], [4.0], [0.5]])
    c = 0.5
    d = np.asarray(cagrad_weights(jnp.asarray(jac @ jac.T, jnp.float32), c=c, rescale=0)) @ jac
    g0 = jac.mean(0)
    # d lies on the ball around g₀ and improves the worst task over g₀ itself.
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-4)
    assert (jac @ d).min() >= (jac @ g0).min() - 1e-5
    # c = 0 is the average gradient.
    w0 = cagrad_weights(jnp.asarray(jac @ jac.T, jnp.float32), c=0.0, rescale=0)
    np.testing.assert_allclose(w0, np.full(3, 1 / 3), rtol=1e-6)


def test_validation():
    with pytest.raises(ValueError, match="c must"):
        mtl.balancers.cagrad(c=-1.0)
    with pytest.raises(ValueError, match="rescale"):
        mtl.balancers.cagrad(rescale=3)
