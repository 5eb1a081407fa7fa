"""Aligned-MTL: fixed values against torchjd 0.18 (all scale modes), the alignment
property (aligned Gram = λ_s on the span), invariance of the weights to a global
scale, permutation equivariance and degenerate inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax.weighting import aligned_mtl_weights

J_TORCHJD = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
MODES = ["min", "median", "rmse"]


def _jacobians():
    rng = np.random.default_rng(0)
    g = rng.normal(size=5)
    out = [J_TORCHJD, np.stack([g, g, g]), np.stack([g, -g]), np.stack([g, 0 * g])]
    for k, p in [(3, 5), (5, 3), (6, 4), (10, 30)]:
        out.append(rng.normal(size=(k, p)) + 0.5 * rng.normal(size=(1, p)))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_matches_torchjd(mode):
    torch = pytest.importorskip("torch")
    agg = pytest.importorskip("torchjd.aggregation")
    for j in _jacobians():
        k = j.shape[0]
        ref = agg.AlignedMTL(scale_mode=mode)(torch.tensor(j)).numpy()
        w = aligned_mtl_weights(
            jnp.asarray(j @ j.T, jnp.float32), pref_vector=jnp.full(k, 1.0 / k), scale_mode=mode
        )
        np.testing.assert_allclose(
            np.asarray(w) @ j, ref, rtol=1e-4, atol=1e-5 * max(np.abs(ref).max(), 1)
        )


def test_torchjd_fixed_values():
    # torchjd 0.18 AlignedMTL(scale_mode=...) on J = [[-4, 1, 1], [6, 1, 1]] (p = 1/K).
    j = jnp.asarray(J_TORCHJD, jnp.float32)
    expected = {"min": [0.2133, 0.9673, 0.9673], "rmse": [0.5764, 2.6142, 2.6142]}
    for mode, ref in expected.items():
        w = aligned_mtl_weights(j @ j.T, pref_vector=jnp.full(2, 0.5), scale_mode=mode)
        np.testing.assert_allclose(w @ j, ref, atol=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_aligned_gradients_are_orthogonal_with_equal_norms(mode):
    rng = np.random.default_rng(2)
    j = rng.normal(size=(4, 10)) * np.array([[0.1], [1.0], [3.0], [10.0]])
    g = j @ j.T
    k = 4
    # B = the weights for each unit preference: column i is w(e_i).
    b = np.stack(
        [
            aligned_mtl_weights(
                jnp.asarray(g, jnp.float32), pref_vector=jnp.eye(k)[i], scale_mode=mode
            )
            for i in range(k)
        ],
        axis=1,
    )
    aligned = b.T @ g @ b  # Gram of the aligned gradients BJ
    lam = np.linalg.eigvalsh(g)
    scale = {"min": lam.min(), "median": np.sort(lam)[(k - 1) // 2], "rmse": lam.mean()}[mode]
    np.testing.assert_allclose(aligned, scale * np.eye(k), rtol=2e-3, atol=2e-3 * scale)


def test_scale_and_permutation():
    j = _jacobians()[4]
    g = jnp.asarray(j @ j.T, jnp.float32)
    w = np.asarray(aligned_mtl_weights(g))
    np.testing.assert_allclose(aligned_mtl_weights(25.0 * g), w, rtol=1e-4)  # d(cJ) = c d(J)
    perm = np.array([2, 0, 1])
    np.testing.assert_allclose(aligned_mtl_weights(g[perm][:, perm]), w[perm], rtol=1e-4)


def test_zero_gram_gives_preference():
    np.testing.assert_allclose(aligned_mtl_weights(jnp.zeros((3, 3))), np.ones(3))


def test_balancer_matches_weights():
    j = jnp.asarray(J_TORCHJD, jnp.float32)
    tx = mtl.balancers.aligned_mtl(num_tasks=2, scale_mode="rmse")
    out, s = jax.jit(lambda s: tx.update({"p": j}, s, task_losses=jnp.ones(2)))(tx.init(None))
    w = aligned_mtl_weights(j @ j.T, scale_mode="rmse")
    np.testing.assert_allclose(out["p"], w @ j, rtol=1e-5)
    np.testing.assert_allclose(mtl.balancers.task_weights(s), w, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs", [{"scale_mode": "max"}, {"pref_vector": jnp.ones(3), "num_tasks": 2}]
)
def test_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        mtl.balancers.aligned_mtl(**kwargs)
