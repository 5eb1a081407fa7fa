"""GradVac: torchjd's stateful GradVac over several steps, a NumPy re-implementation of the
paper's Algorithm 1 with the same orders, and the cosine-target property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax.weighting import gradvac_weights, pcgrad_weights

J_TORCHJD = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _numpy_gradvac(jac, targets, orders, beta, eps=1e-8):
    targets = targets.copy()
    out = np.zeros(jac.shape[1])
    for i in range(jac.shape[0]):
        g = jac[i].copy()
        for j in orders[i]:
            if j == i:
                continue
            nj = np.linalg.norm(jac[j])
            phi = g @ jac[j] / (np.linalg.norm(g) * nj + eps)
            hat = targets[i, j]
            if phi < hat:
                coef = (
                    np.linalg.norm(g)
                    * (hat * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - hat**2))
                    / (nj * np.sqrt(1 - hat**2) + eps)
                )
                g = g + coef * jac[j]
            targets[i, j] = (1 - beta) * hat + beta * phi
        out += g
    return out, targets


def test_matches_torchjd_over_steps():
    torch = pytest.importorskip("torch")
    torchjd_agg = pytest.importorskip("torchjd.aggregation")
    ref = torchjd_agg.GradVac(beta=0.5)
    tx = mtl.balancers.gradvac(beta=0.5, num_tasks=2)
    state = tx.init(None)
    update = jax.jit(tx.update)
    rng = np.random.default_rng(0)
    for step in range(4):
        jac = J_TORCHJD if step == 0 else J_TORCHJD + rng.normal(size=J_TORCHJD.shape)
        expected = ref(torch.tensor(jac)).numpy()
        out, state = update({"w": jnp.asarray(jac, jnp.float32)}, state, task_losses=jnp.ones(2))
        np.testing.assert_allclose(out["w"], expected, rtol=1e-4, atol=1e-5)


def test_matches_numpy_reference_with_same_orders():
    rng = np.random.default_rng(1)
    k = 4
    targets = np.zeros((k, k))
    ours = jnp.zeros((k, k))
    for _ in range(3):
        jac = rng.normal(size=(k, 8)) + 0.3 * rng.normal(size=(1, 8))
        orders = np.stack([rng.permutation(k) for _ in range(k)])
        expected, targets = _numpy_gradvac(jac, targets, orders, beta=0.3)
        w, ours = gradvac_weights(
            jnp.asarray(jac @ jac.T, jnp.float32), ours, beta=0.3, orders=orders
        )
        np.testing.assert_allclose(np.asarray(w) @ jac, expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours, targets, rtol=1e-4, atol=1e-5)


def test_first_step_is_pcgrad_and_cosine_reaches_target():
    g = jnp.asarray(J_TORCHJD @ J_TORCHJD.T, jnp.float32)
    orders = jnp.array([[0, 1], [1, 0]])
    w, _ = gradvac_weights(g, jnp.zeros((2, 2)), orders=orders)
    np.testing.assert_allclose(w, pcgrad_weights(g, orders=orders), rtol=1e-5)
    # With a positive target the corrected g_1 makes exactly that angle with g_2. For K = 2,
    # w_2 − 1 is the multiple of g_2 added to g_1 (task 2's correction adds to w_1).
    targets = jnp.array([[0.0, 0.3], [0.3, 0.0]])
    w, new_targets = gradvac_weights(g, targets, orders=orders, beta=0.5)
    v = J_TORCHJD[0] + (float(w[1]) - 1.0) * J_TORCHJD[1]
    cos = v @ J_TORCHJD[1] / (np.linalg.norm(v) * np.linalg.norm(J_TORCHJD[1]))
    np.testing.assert_allclose(cos, 0.3, atol=1e-4)
    phi = J_TORCHJD[0] @ J_TORCHJD[1] / np.prod(np.linalg.norm(J_TORCHJD, axis=1))
    np.testing.assert_allclose(new_targets[0, 1], 0.5 * 0.3 + 0.5 * phi, rtol=1e-5)


def test_validation():
    with pytest.raises(ValueError, match="beta"):
        mtl.balancers.gradvac(num_tasks=2, beta=1.5)


def test_targets_stay_cosines_on_dependent_low_precision_gradients():
    """Found by the fuzzer: K = 64 unit gradients in 16 dimensions, in bfloat16.

    Cancellation in ``cᵀGc`` sent the measured cosine (and the EMA targets) to
    ±50 and the second update to inf; cosines are now clipped to ``[-1, 1]``.
    """
    import pathlib

    rows = np.load(pathlib.Path(__file__).parent / "data" / "gradvac_k64_bf16_rows.npy")
    tx = mtl.balancers.gradvac(num_tasks=64)
    params = {"a": jnp.zeros(16)}
    jac = {"a": jnp.asarray(rows, jnp.bfloat16)}
    update = jax.jit(lambda j, s, ls: tx.update(j, s, params, task_losses=ls))
    state = tx.init(params)
    for scale in (1.0, 0.5, 0.25):
        out, state = update(jac, state, jnp.full((64,), scale, jnp.bfloat16))
        assert np.all(np.isfinite(np.asarray(out["a"], np.float32)))
        assert np.all(np.abs(np.asarray(state.targets)) <= 1.0)
