"""DB-MTL: against a NumPy re-run of LibMTL's DB_MTL; equal balanced norms; representation mode."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0], [0.5, -2.0, 0.0]])


def _libmtl_db_mtl(jacs, losses_seq, beta, beta_sigma):
    """LibMTL's DB_MTL.backward (weighting/DB_MTL.py) in NumPy: EMA of log-loss gradients."""
    buf = np.zeros_like(jacs[0])
    outs = []
    for t, (jac, losses) in enumerate(zip(jacs, losses_seq), start=1):
        grads = jac / (losses[:, None] + 1e-8)  # ∇ log(L + 1e-8)
        buf = grads + (beta / t**beta_sigma) * (buf - grads)
        u = np.linalg.norm(buf, axis=1)
        alpha = u.max() / (u + 1e-8)
        outs.append(alpha @ buf)
    return outs


def test_matches_libmtl_without_moving_average():
    rng = np.random.default_rng(0)
    jacs = [J, J + 0.3 * rng.normal(size=J.shape)]
    losses = [np.array([0.5, 2.0, 1.0]), np.array([0.4, 1.5, 0.9])]
    ref = _libmtl_db_mtl(jacs, losses, beta=0.0, beta_sigma=0.0)
    tx = mtl.balancers.db_mtl(num_tasks=3, beta=0.0)
    state = tx.init(None)
    for jac, ls, r in zip(jacs, losses, ref):
        u, state = tx.update({"w": jnp.asarray(jac, jnp.float32)}, state, task_losses=ls)
        np.testing.assert_allclose(u["w"], r, rtol=1e-5)


def test_first_step_matches_libmtl_up_to_ema_scale():
    losses = np.array([0.5, 2.0, 1.0])
    (ref,) = _libmtl_db_mtl([J], [losses], beta=0.9, beta_sigma=0.5)
    tx = mtl.balancers.db_mtl(num_tasks=3, beta=0.9, beta_sigma=0.5)
    u, _ = tx.update({"w": jnp.asarray(J, jnp.float32)}, tx.init(None), task_losses=losses)
    # LibMTL combines the zero-started gradient average, (1 − β)·g at step 1.
    np.testing.assert_allclose(0.1 * np.asarray(u["w"]), ref, rtol=1e-5)


def test_balanced_log_gradients_have_equal_norms():
    losses = jnp.array([0.5, 20.0, 1.0])
    tx = mtl.balancers.db_mtl(num_tasks=3, beta=0.0)
    _, state = tx.update({"w": jnp.asarray(J, jnp.float32)}, tx.init(None), task_losses=losses)
    contrib = np.asarray(state.weights)[:, None] * J
    norms = np.linalg.norm(contrib, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)
    # The largest log-gradient norm is kept: α = 1 for that task.
    log_norms = np.linalg.norm(J, axis=1) / np.asarray(losses)
    np.testing.assert_allclose(norms.max(), log_norms.max(), rtol=1e-5)


def test_moving_average_of_norms():
    tx = mtl.balancers.db_mtl(num_tasks=2, beta=0.5)
    state = tx.init(None)
    losses = jnp.ones(2)
    for scale in (1.0, 3.0):
        jac = {"w": jnp.array([[scale, 0.0], [0.0, 1.0]])}
        _, state = tx.update(jac, state, task_losses=losses)
    # n = 0.5·(0.5·[1, 1]) + 0.5·[3, 1] = [1.75, 0.75]
    np.testing.assert_allclose(state.norms, [1.75, 0.75], rtol=1e-5)
    np.testing.assert_allclose(state.weights, [1.0, 1.75 / 0.75], rtol=1e-5)


def test_representation_mode_runs():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
    params = {
        "encoder": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
        "heads": jnp.ones((2, 4)),
    }
    encode = lambda p, b: jnp.tanh(b[0] @ p["encoder"])
    decode = lambda p, z, b: jnp.mean((jnp.einsum("nd,kd->kn", z, p["heads"]) - b[1]) ** 2, 1)
    step = mtl.training.make_train_step(
        lambda p, b: decode(p, encode(p, b), b),
        mtl.balancers.db_mtl(num_tasks=2),
        optax.adam(1e-2),
        mode="representation",
        representation=mtl.training.Representation(encode, decode),
    )
    state = step.init(params)
    first = None
    for _ in range(20):
        state, metrics = step(state, (x, y))
        first = metrics["losses"] if first is None else first
    assert np.all(np.isfinite(metrics["weights"]))
    assert float(jnp.sum(metrics["losses"])) < float(jnp.sum(first))


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="beta"):
        mtl.balancers.db_mtl(num_tasks=2, beta=1.0)
    with pytest.raises(ValueError, match="beta_sigma"):
        mtl.balancers.db_mtl(num_tasks=2, beta_sigma=-1.0)
    assert mtl.balancers.db_mtl(num_tasks=2).spec.kind == "gram"
