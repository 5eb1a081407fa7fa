"""MGDA: the min-norm point of the convex hull against SciPy (SLSQP) on random Gram
matrices, against torchjd 0.18's Frank-Wolfe MGDA, the common-descent property
⟨g_k, d⟩ ≥ ‖d‖², and the four gradient normalisations re-computed with SciPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import mtl_jax as mtl
from mtl_jax.weighting import mgda_normalizers, mgda_weights, min_norm_simplex

J_TORCHJD = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def scipy_min_norm(g):
    """min_{w ∈ Δ} wᵀGw by SLSQP in float64."""
    k = g.shape[0]
    res = minimize(
        lambda w: (w @ g @ w, 2 * g @ w),
        np.full(k, 1.0 / k),
        jac=True,
        bounds=[(0.0, 1.0)] * k,
        constraints={"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones(k)},
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x


def _jacobians():
    rng = np.random.default_rng(0)
    out = [J_TORCHJD]
    for k, p in [(2, 4), (3, 6), (5, 3), (10, 20)]:
        out.append(rng.normal(size=(k, p)) + 0.3 * rng.normal(size=(1, p)))
    return out


@pytest.mark.parametrize("idx", range(5))
def test_min_norm_matches_scipy(idx):
    j = _jacobians()[idx]
    g = j @ j.T
    w = np.asarray(jax.jit(min_norm_simplex)(jnp.asarray(g, jnp.float32)), np.float64)
    ref = scipy_min_norm(g)
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-5
    # The min-norm *point* Jᵀw is unique even when w is not.
    np.testing.assert_allclose(w @ j, ref @ j, atol=2e-4 * np.abs(j).max())
    np.testing.assert_allclose(w @ g @ w, ref @ g @ ref, rtol=1e-3, atol=1e-6 * np.trace(g))


@pytest.mark.parametrize("idx", range(5))
def test_matches_torchjd(idx):
    torch = pytest.importorskip("torch")
    agg = pytest.importorskip("torchjd.aggregation")
    j = _jacobians()[idx]
    ref = agg.MGDA(epsilon=1e-9, max_iters=5000)(torch.tensor(j)).numpy()
    d = np.asarray(mgda_weights(jnp.asarray(j @ j.T, jnp.float32))) @ j
    np.testing.assert_allclose(d, ref, atol=1e-3 * np.abs(j).max())


def test_torchjd_fixed_value():
    # torchjd 0.18 MGDA() on J = [[-4, 1, 1], [6, 1, 1]].
    j = jnp.asarray(J_TORCHJD, jnp.float32)
    np.testing.assert_allclose(mgda_weights(j @ j.T) @ j, [0.0, 1.0, 1.0], atol=1e-4)


@pytest.mark.parametrize("idx", range(5))
def test_common_descent(idx):
    j = _jacobians()[idx]
    d = np.asarray(mgda_weights(jnp.asarray(j @ j.T, jnp.float32))) @ j
    # ⟨g_k, d⟩ ≥ ‖d‖² ≥ 0 for every task (first-order optimality on the simplex).
    assert np.all(j @ d >= d @ d - 1e-4 * np.max(np.sum(j**2, 1)))


def test_pareto_stationary_gives_zero():
    g = np.array([1.0, -2.0, 0.5])
    j = np.stack([g, -2 * g])
    d = np.asarray(mgda_weights(jnp.asarray(j @ j.T, jnp.float32))) @ j
    np.testing.assert_allclose(d, 0.0, atol=1e-5)


@pytest.mark.parametrize("norm", ["none", "l2", "loss", "loss+"])
def test_normalizations(norm):
    rng = np.random.default_rng(3)
    j = rng.normal(size=(3, 5)) * np.array([[0.1], [1.0], [10.0]])
    losses = np.array([0.5, 2.0, 4.0])
    norms = np.linalg.norm(j, axis=1)
    c = {"none": np.ones(3), "l2": norms, "loss": losses, "loss+": losses * norms}[norm]
    jn = j / c[:, None]
    ref = scipy_min_norm(jn @ jn.T) @ jn  # min-norm point of the normalised gradients
    g = jnp.asarray(j @ j.T, jnp.float32)
    np.testing.assert_allclose(mgda_normalizers(g, losses, normalization=norm), c, rtol=1e-5)
    w = np.asarray(mgda_weights(g, jnp.asarray(losses, jnp.float32), normalization=norm))
    np.testing.assert_allclose(w @ j, ref, atol=2e-4 * np.abs(ref).max())


def test_normalization_needs_losses():
    with pytest.raises(ValueError, match="losses"):
        mgda_weights(jnp.eye(2), normalization="loss")


def test_balancer_matches_weights_and_records_them():
    j = jnp.asarray(_jacobians()[2], jnp.float32)
    losses = jnp.array([1.0, 2.0, 3.0])
    tx = mtl.balancers.mgda(normalization="loss+", num_tasks=3)
    out, s = jax.jit(lambda s: tx.update({"p": j}, s, task_losses=losses))(tx.init(None))
    w = mgda_weights(j @ j.T, losses, normalization="loss+")
    np.testing.assert_allclose(out["p"], w @ j, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mtl.balancers.task_weights(s), w, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [{"normalization": "l1"}, {"num_iters": 0}, {"num_tasks": 0}])
def test_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        mtl.balancers.mgda(**kwargs)
