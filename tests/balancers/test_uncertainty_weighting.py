"""Uncertainty weighting: weights, the log-variance gradient, its fixed point, both routes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl


def test_log_variance_gradient_matches_autodiff_and_torch():
    s = jnp.array([-0.5, 0.0, 1.2])
    losses = jnp.array([0.3, 2.0, 5.0])
    closed = mtl.weighting.uncertainty_log_variance_grad(s, losses)
    auto = jax.grad(mtl.weighting.uncertainty_objective)(s, losses)
    np.testing.assert_allclose(closed, auto, rtol=1e-6)
    np.testing.assert_allclose(closed, 0.5 - 0.5 * np.exp(-np.asarray(s)) * losses, rtol=1e-6)
    torch = pytest.importorskip("torch")
    # LibMTL's UW objective: Σ L / (2 e^s) + s / 2; gradients w.r.t. s and w.r.t. L.
    ts = torch.tensor(np.asarray(s), dtype=torch.float64, requires_grad=True)
    tl = torch.tensor(np.asarray(losses), dtype=torch.float64, requires_grad=True)
    (tl / (2 * ts.exp()) + ts / 2).sum().backward()
    np.testing.assert_allclose(closed, ts.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(mtl.weighting.uncertainty_weights(s), tl.grad.numpy(), rtol=1e-6)


def test_scripted_sgd_steps_by_hand():
    lr = 0.1
    tx = mtl.balancers.uncertainty_weighting(num_tasks=2, optimizer=optax.sgd(lr))
    state = tx.init(None)
    jac = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0]])}
    s = np.zeros(2)
    for losses in ([1.0, 4.0], [0.5, 3.0], [0.25, 2.0]):
        losses = np.asarray(losses)
        u, state = tx.update(jac, state, task_losses=jnp.asarray(losses, jnp.float32))
        w = 0.5 * np.exp(-s)
        np.testing.assert_allclose(u["w"], w, rtol=1e-6)
        np.testing.assert_allclose(state.weights, w, rtol=1e-6)
        s = s - lr * (0.5 - 0.5 * np.exp(-s) * losses)
        np.testing.assert_allclose(state.log_variances, s, rtol=1e-5)


def test_log_variances_converge_to_log_loss():
    # The joint objective is minimised at s_k = log L_k, i.e. w_k = 1 / (2 L_k).
    tx = mtl.balancers.uncertainty_weighting(num_tasks=3, optimizer=optax.sgd(0.5))
    losses = jnp.array([0.2, 1.0, 7.0])
    state = tx.init(None)
    fn = jax.jit(tx.spec.loss_weights)
    for _ in range(400):
        _, state = fn(losses, state)
    np.testing.assert_allclose(state.log_variances, np.log(losses), rtol=1e-3, atol=1e-3)


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="learning_rate"):
        mtl.balancers.uncertainty_weighting(num_tasks=2, learning_rate=0.0)
    with pytest.raises(ValueError, match="num_tasks"):
        mtl.balancers.uncertainty_weighting(num_tasks=0)
