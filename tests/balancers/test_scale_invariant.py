"""SI (∇ Σ log L) and IMTL-L (learned scales), cross-checked against autodiff and torchjd."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

torch = pytest.importorskip("torch")
torchjd = pytest.importorskip("torchjd")


def _problem(rng, k=3, n=5):
    a = rng.normal(size=(k, 4, n))
    b = rng.normal(size=(k, 4))
    theta = rng.normal(size=(n,))

    def losses(t):
        r = jnp.einsum("kij,j->ki", a, t) - b
        return 0.5 * jnp.sum(r**2, axis=1) + 0.1

    return losses, theta


def test_si_update_is_the_gradient_of_the_summed_log_losses(rng):
    with jax.enable_x64(True):
        losses, theta = _problem(rng)
        theta = jnp.asarray(theta, jnp.float64)
        expected = jax.grad(lambda t: jnp.sum(jnp.log(losses(t))))(theta)
        values, jac = mtl.value_and_jacobian(lambda p: losses(p["t"]))({"t": theta})
        tx = mtl.balancers.scale_invariant(num_tasks=3)
        out, state = jax.jit(lambda s: tx.update(jac, s, task_losses=values))(tx.init(None))
        np.testing.assert_allclose(out["t"], expected, rtol=1e-12)
        np.testing.assert_allclose(mtl.balancers.task_weights(state), 1 / values, rtol=1e-6)


def test_si_is_invariant_to_loss_scale(rng):
    j = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
    ls = jnp.array([0.5, 3.0])
    tx = mtl.balancers.scale_invariant()
    a, _ = tx.update({"w": j}, tx.init(None), task_losses=ls)
    scale = jnp.array([10.0, 0.01])
    b, _ = tx.update({"w": j * scale[:, None]}, tx.init(None), task_losses=ls * scale)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5)


def test_si_zero_loss_is_finite_and_absent_task_is_zero():
    w = mtl.weighting.scale_invariant_weights(jnp.array([0.0, 2.0, 4.0]), eps=1e-3)
    np.testing.assert_allclose(w, [1e3, 0.5, 0.25], rtol=1e-6)
    w = mtl.weighting.scale_invariant_weights(
        jnp.array([0.0, 2.0, 4.0]), presence=jnp.array([False, True, True])
    )
    np.testing.assert_allclose(w, [0.0, 0.5, 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="eps"):
        mtl.balancers.scale_invariant(eps=0.0)


def test_imtl_l_matches_torchjd_scalarizer_under_sgd():
    """Same losses, same SGD on s: torchjd's IMTLL scales and weights equal ours at every step."""
    from torchjd.scalarization import IMTLL

    lr = 0.3
    seq = np.random.default_rng(0).uniform(0.1, 5.0, size=(6, 3))
    scalarizer = IMTLL(3)
    opt = torch.optim.SGD(scalarizer.parameters(), lr=lr)
    tx = mtl.balancers.imtl_l(num_tasks=3, optimizer=optax.sgd(lr))
    state = tx.init(None)
    jac = {"w": jnp.eye(3)}  # orthonormal rows: the update is the weight vector
    update = jax.jit(lambda s, ls: tx.update(jac, s, task_losses=ls))
    for ls in seq:
        values = torch.tensor(ls, requires_grad=True)
        opt.zero_grad()
        scalarizer(values).backward()
        ref_weights = values.grad.numpy().copy()  # ∂/∂L_k = e^{s_k}, s before the step
        opt.step()
        out, state = update(state, jnp.asarray(ls, jnp.float32))
        np.testing.assert_allclose(out["w"], ref_weights, rtol=1e-5)
        np.testing.assert_allclose(
            state.log_scales, scalarizer.log_scale.detach().numpy(), rtol=1e-5, atol=1e-6
        )
    # The closed-form ∂/∂s equals autodiff of the objective.
    s = jnp.array([0.2, -0.4, 1.0])
    ls = jnp.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(
        mtl.weighting.imtl_l_scale_grad(s, ls),
        jax.grad(mtl.weighting.imtl_l_objective)(s, ls),
        rtol=1e-6,
    )


def test_imtl_l_absent_task_keeps_its_state_and_present_tasks_match_the_subset_run():
    tx3 = mtl.balancers.imtl_l(num_tasks=3, learning_rate=0.1)
    if "presence" not in inspect.signature(tx3.spec.loss_weights).parameters:
        pytest.skip("the balancer base does not pass task presence yet")
    tx2 = mtl.balancers.imtl_l(num_tasks=2, learning_rate=0.1)
    s3, s2 = tx3.init(None), tx2.init(None)
    rng = np.random.default_rng(1)
    present = jnp.array([True, False, True])
    weights_fn = jax.jit(tx3.spec.loss_weights)
    for step in range(4):
        ls = jnp.asarray(rng.uniform(0.5, 2.0, size=3), jnp.float32)
        # Task 1 is absent on even steps only: presence is data inside one compiled function.
        p = present if step % 2 == 0 else jnp.ones(3, bool)
        before = s3
        w3, s3 = weights_fn(ls, s3, presence=p)
        if step % 2 == 0:
            assert float(w3[1]) == 0.0
            assert float(s3.log_scales[1]) == float(before.log_scales[1])
            assert float(s3.inner_state[0].mu[1]) == float(before.inner_state[0].mu[1])
            # The present tasks' state equals a 2-task run from the restricted state.
            restricted = jax.tree_util.tree_map(
                lambda x: x[np.array([0, 2])] if jnp.shape(x) == (3,) else x, before
            )
            w2, s2 = tx2.spec.loss_weights(ls[np.array([0, 2])], restricted)
            np.testing.assert_allclose(w3[np.array([0, 2])], w2, rtol=1e-6)
            np.testing.assert_allclose(s3.log_scales[np.array([0, 2])], s2.log_scales, rtol=1e-6)


def test_imtl_is_the_gradient_half():
    """Our ``imtl`` (IMTL-G): the update has equal projections onto the unit task gradients."""
    rng = np.random.default_rng(2)
    j = rng.normal(size=(3, 6))
    w = np.asarray(mtl.weighting.imtl_weights(jnp.asarray(j @ j.T)), np.float64)
    d = w @ j
    proj = j @ d / np.linalg.norm(j, axis=1)
    np.testing.assert_allclose(proj, proj[0], rtol=1e-4)
