"""FairGrad: the α-fair condition Gw = w^{-1/α}, fixed values against torchjd 0.18
(scipy least_squares), α = 1 coinciding with Nash-MTL, α = 0 uniform, the scaling
law, and permutation equivariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax.weighting import fairgrad_weights, nash_mtl_weights

J_TORCHJD = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
ALPHAS = [0.5, 1.0, 2.0, 5.0]


def _jacobians():
    rng = np.random.default_rng(0)
    out = [J_TORCHJD]
    for k, p in [(3, 5), (5, 8), (10, 30)]:
        out.append(rng.normal(size=(k, p)) + 0.5 * rng.normal(size=(1, p)))
    return out


@pytest.mark.parametrize("alpha", ALPHAS)
def test_fair_condition(alpha):
    for j in _jacobians():
        g = j @ j.T
        w = np.asarray(fairgrad_weights(jnp.asarray(g, jnp.float32), alpha=alpha, reg_eps=0.0))
        assert np.all(w > 0)
        np.testing.assert_allclose(g @ w, w ** (-1.0 / alpha), rtol=5e-4)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_matches_torchjd(alpha):
    torch = pytest.importorskip("torch")
    agg = pytest.importorskip("torchjd.aggregation")
    pytest.importorskip("scipy")
    for j in _jacobians():
        ref = agg.FairGrad(alpha=alpha)(torch.tensor(j)).numpy()
        w = fairgrad_weights(jnp.asarray(j @ j.T, jnp.float32), alpha=alpha)
        np.testing.assert_allclose(np.asarray(w) @ j, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_torchjd_fixed_values():
    # torchjd 0.18 FairGrad(alpha) on J = [[-4, 1, 1], [6, 1, 1]].
    expected = {
        0.5: [0.1810, 1.2682, 1.2682],
        1.0: [0.0766, 0.9985, 0.9985],
        2.0: [0.0313, 0.7908, 0.7908],
        5.0: [0.0101, 0.6283, 0.6283],
    }
    j = jnp.asarray(J_TORCHJD, jnp.float32)
    for alpha, ref in expected.items():
        np.testing.assert_allclose(fairgrad_weights(j @ j.T, alpha=alpha) @ j, ref, atol=2e-3)


def test_alpha_one_is_nash_and_alpha_zero_is_uniform():
    j = _jacobians()[2]
    g = jnp.asarray(j @ j.T, jnp.float32)
    np.testing.assert_allclose(fairgrad_weights(g, alpha=1.0), nash_mtl_weights(g), rtol=1e-5)
    np.testing.assert_allclose(fairgrad_weights(g, alpha=0.0), np.full(5, 0.2), rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_scaling_law_and_permutation(alpha):
    j = _jacobians()[1]
    g = jnp.asarray(j @ j.T, jnp.float32)
    w = np.asarray(fairgrad_weights(g, alpha=alpha))
    c = 3.0  # J → cJ scales w by c^{-2α/(1+α)}
    np.testing.assert_allclose(
        fairgrad_weights(c**2 * g, alpha=alpha), w * c ** (-2 * alpha / (1 + alpha)), rtol=1e-4
    )
    perm = np.array([2, 0, 1])
    np.testing.assert_allclose(fairgrad_weights(g[perm][:, perm], alpha=alpha), w[perm], rtol=1e-4)


def test_balancer_matches_weights():
    j = jnp.asarray(J_TORCHJD, jnp.float32)
    tx = mtl.balancers.fairgrad(alpha=2.0, num_tasks=2)
    out, s = jax.jit(lambda s: tx.update({"p": j}, s, task_losses=jnp.ones(2)))(tx.init(None))
    w = fairgrad_weights(j @ j.T, alpha=2.0)
    np.testing.assert_allclose(out["p"], w @ j, rtol=1e-5)
    np.testing.assert_allclose(mtl.balancers.task_weights(s), w, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"alpha": -1.0}, {"reg_eps": -1.0}, {"num_iters": 0}])
def test_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        mtl.balancers.fairgrad(**kwargs)
