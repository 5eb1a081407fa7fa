"""IMTL with both halves against a NumPy float64 transcription of LibMTL's ``IMTL``.

LibMTL: scaled losses e^{s_k} L_k − s_k; their gradients g̃_k = e^{s_k} g_k; IMTL-G's closed
form α_{2:K} = g̃_1 Uᵀ (D Uᵀ)⁻¹ (D, U: differences of g̃_1 and of the unit u_1 to the others),
α_1 = 1 − Σ α_{2:K}; update Σ α_k g̃_k; s gets ∂/∂s Σ_k L̃_k = e^{s} L − 1 (one SGD step here).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl


def _libmtl_imtl(j, losses, s, lr):
    g = np.exp(s)[:, None] * j
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[0:1] - g[1:]
    u = unit[0:1] - unit[1:]
    alpha = g[0] @ u.T @ np.linalg.inv(d @ u.T)
    alpha = np.concatenate([[1 - alpha.sum()], alpha])
    update = alpha @ g
    s_new = s - lr * (np.exp(s) * losses - 1.0)
    return update, alpha * np.exp(s), s_new


def test_matches_numpy_transcription_of_libmtl():
    rng = np.random.default_rng(0)
    k, lr = 3, 0.2
    tx = mtl.balancers.imtl_hybrid(num_tasks=k, optimizer=optax.sgd(lr))
    state = tx.init(None)
    update = jax.jit(lambda s, j, ls: tx.update({"w": j}, s, task_losses=ls))
    s = np.zeros(k)
    worst = 0.0
    for _ in range(6):
        j = rng.normal(size=(k, 6)) * rng.uniform(0.3, 3.0, size=(k, 1))
        losses = rng.uniform(0.3, 3.0, size=k)
        expected, w, s = _libmtl_imtl(j, losses, s, lr)
        out, state = update(state, jnp.asarray(j, jnp.float32), jnp.asarray(losses, jnp.float32))
        np.testing.assert_allclose(out["w"], expected, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(state.weights, w, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(state.log_scales, s, rtol=1e-5, atol=1e-6)
        worst = max(worst, float(np.max(np.abs(np.asarray(out["w"]) - expected))))
    print(f"[imtl_hybrid] largest |update - numpy| = {worst:.2e}")


def test_at_zero_scales_it_is_imtl_g():
    rng = np.random.default_rng(1)
    j = rng.normal(size=(3, 5))
    g = jnp.asarray(j @ j.T, jnp.float32)
    np.testing.assert_allclose(
        mtl.weighting.imtl_hybrid_weights(g, jnp.zeros(3)),
        mtl.weighting.imtl_weights(g),
        rtol=1e-5,
    )


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_tasks"):
        mtl.balancers.imtl_hybrid()
    with pytest.raises(ValueError, match="learning_rate"):
        mtl.balancers.imtl_hybrid(num_tasks=2, learning_rate=0.0)
    with pytest.raises(TypeError, match="optimizer"):
        mtl.balancers.imtl_hybrid(num_tasks=2, optimizer="adam")
