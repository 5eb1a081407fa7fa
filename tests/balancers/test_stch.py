"""STCH: weights against torch autograd of the authors' objective; warm-up and nadir."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl


def _torch_stch_grad(losses, nadir, mu):
    """d/dL of the authors' STCH_MTL objective (Xi-L/STCH, LibMTL/weighting/STCH.py)."""
    torch = pytest.importorskip("torch")
    t = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    u = torch.log(t / torch.tensor(nadir, dtype=torch.float64) + 1e-20)
    reg = u - torch.max(u.data).detach()
    loss = mu * torch.log(torch.sum(torch.exp(reg / mu))) * len(losses)
    loss.backward()
    return t.grad.numpy()


@pytest.mark.parametrize("mu", [0.1, 1.0, 5.0])
def test_weights_match_torch_reference(mu):
    losses = np.array([0.4, 2.5, 1.0, 0.9])
    nadir = np.array([0.5, 2.0, 1.5, 1.0])
    ref = _torch_stch_grad(losses, nadir, mu)
    w = mtl.weighting.stch_weights(jnp.asarray(losses), nadir=jnp.asarray(nadir), mu=mu)
    np.testing.assert_allclose(w, ref, rtol=1e-5)
    g = jax.grad(lambda ls: mtl.weighting.stch_objective(ls, nadir=jnp.asarray(nadir), mu=mu))(
        jnp.asarray(losses)
    )
    np.testing.assert_allclose(w, g, rtol=1e-5)


def test_small_mu_focuses_on_worst_normalised_task():
    losses = jnp.array([1.0, 3.0, 2.0])
    nadir = jnp.array([1.0, 2.0, 2.0])  # normalised: 1, 1.5, 1 -> task 1 is worst
    w = mtl.weighting.stch_weights(losses, nadir=nadir, mu=0.01)
    np.testing.assert_allclose(w * losses, [0.0, 3.0, 0.0], atol=1e-6)


def test_warmup_then_nadir_from_averaged_losses():
    seq = np.array([[4.0, 2.0], [2.0, 1.0], [1.0, 0.6], [0.5, 0.5], [0.4, 0.3]])
    tx = mtl.balancers.stch(num_tasks=2, mu=0.5, warmup_steps=3, nadir_steps=2)
    state = tx.init(None)
    fn = jax.jit(tx.spec.loss_weights)
    ws = []
    for row in seq:
        w, state = fn(jnp.asarray(row, jnp.float32), state)
        ws.append(np.asarray(w))
    for t in range(3):  # warm-up: gradient of Σ log L
        np.testing.assert_allclose(ws[t], 1.0 / seq[t], rtol=1e-6)
    nadir = seq[1:3].mean(0)
    np.testing.assert_allclose(state.nadir, nadir, rtol=1e-6)
    for t in (3, 4):
        np.testing.assert_allclose(ws[t], _torch_stch_grad(seq[t], nadir, 0.5), rtol=1e-5)


def test_fixed_nadir_and_first_losses_default():
    tx = mtl.balancers.stch(num_tasks=2, nadir=jnp.array([2.0, 1.0]))
    w, _ = tx.spec.loss_weights(jnp.array([1.0, 1.0]), tx.init(None))
    np.testing.assert_allclose(
        w, _torch_stch_grad(np.ones(2), np.array([2.0, 1.0]), 1.0), rtol=1e-5
    )
    tx = mtl.balancers.stch(num_tasks=2)
    state = tx.init(None)
    w0, state = tx.spec.loss_weights(jnp.array([2.0, 4.0]), state)
    np.testing.assert_allclose(state.nadir, [2.0, 4.0])
    np.testing.assert_allclose(w0, [0.5, 0.25], rtol=1e-6)  # K·softmax(0)/L = 1/L


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="mu"):
        mtl.balancers.stch(num_tasks=2, mu=0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        mtl.balancers.stch(num_tasks=2, warmup_steps=-1)
    with pytest.raises(ValueError, match="nadir_steps"):
        mtl.balancers.stch(num_tasks=2, warmup_steps=2, nadir_steps=3)
    with pytest.raises(ValueError, match="nadir"):
        mtl.balancers.stch(num_tasks=2, nadir=jnp.array([1.0, 0.0]))


def test_nadir_of_a_task_absent_at_first_is_its_first_present_loss():
    tx = mtl.balancers.stch(num_tasks=2, mu=0.5)
    fn = jax.jit(tx.spec.loss_weights)
    state = tx.init(None)
    w, state = fn(jnp.array([2.0, 0.0]), state, jnp.array([True, False]))
    np.testing.assert_allclose(w, [0.5, 0.0])  # |S| = 1: w = 1 / L on the present task
    np.testing.assert_array_equal(state.nadir_known, [True, False])
    np.testing.assert_allclose(state.nadir, [2.0, 1.0])
    w, state = fn(jnp.array([1.0, 3.0]), state, jnp.array([True, True]))
    np.testing.assert_allclose(state.nadir, [2.0, 3.0])
    np.testing.assert_allclose(
        w, _torch_stch_grad(np.array([1.0, 3.0]), [2.0, 3.0], 0.5), rtol=1e-5
    )


def test_warmup_nadir_averages_the_calls_in_which_the_task_was_present():
    tx = mtl.balancers.stch(num_tasks=2, warmup_steps=3, nadir_steps=3)
    fn = jax.jit(tx.spec.loss_weights)
    state = tx.init(None)
    rows = [([4.0, 2.0], [True, True]), ([2.0, 0.0], [True, False]), ([1.0, 1.0], [True, True])]
    for row, p in rows:
        _, state = fn(jnp.asarray(row), state, jnp.asarray(p))
    _, state = fn(jnp.array([1.0, 1.0]), state, jnp.ones(2, bool))
    np.testing.assert_allclose(state.nadir, [7.0 / 3.0, 1.5])
