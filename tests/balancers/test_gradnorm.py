"""GradNorm: the closed-form gradient of L_grad against autodiff, L_i(0) recording, the
renormalisation Σw = K, the layer choice, and the paper's toy claim in a tiny form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax._task_tree import TreeMask, resolve_mask
from mtl_jax.weighting import gradnorm_objective, gradnorm_weights_grad


def test_closed_form_gradient_matches_autodiff():
    rng = np.random.default_rng(0)
    for alpha in [0.12, 1.5]:
        for _ in range(5):
            w = jnp.asarray(rng.uniform(0.2, 2.0, 4), jnp.float32)
            norms = jnp.asarray(rng.uniform(0.1, 5.0, 4), jnp.float32)
            losses = jnp.asarray(rng.uniform(0.1, 3.0, 4), jnp.float32)
            l0 = jnp.asarray(rng.uniform(0.5, 3.0, 4), jnp.float32)
            auto = jax.grad(gradnorm_objective)(w, norms, losses, l0, alpha=alpha)
            closed = gradnorm_weights_grad(w, norms, losses, l0, alpha=alpha)
            np.testing.assert_allclose(closed, auto, rtol=1e-6)
            # By hand: G_i = w_i n_i, target Ḡ r_i^α with r from the inverse training rates.
            ratio = np.asarray(losses / l0)
            target = np.mean(np.asarray(w * norms)) * (ratio / ratio.mean()) ** alpha
            np.testing.assert_allclose(
                closed, np.sign(np.asarray(w * norms) - target) * np.asarray(norms), rtol=1e-6
            )


def _params():
    return {
        "encoder": {"bias": jnp.zeros(2), "kernel": jnp.zeros((3, 2))},
        "heads": {"kernel": jnp.zeros((2, 2))},
    }


def _jac(rng, k=2):
    return jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.normal(size=(k, *p.shape)), jnp.float32), _params()
    )


def test_records_initial_losses_and_renormalises():
    rng = np.random.default_rng(1)
    shared = lambda path, _: "encoder" in jax.tree_util.keystr(path)
    tx = mtl.balancers.gradnorm(num_tasks=3, alpha=1.5, learning_rate=0.1, shared=shared)
    params = _params()
    state = tx.init(params)
    update = jax.jit(lambda j, s, ls: tx.update(j, s, params, task_losses=ls))
    first = jnp.array([1.0, 2.0, 4.0])
    _, state = update(_jac(rng, 3), state, first)
    np.testing.assert_allclose(state.initial_losses, first)
    for i in range(5):
        out, state = update(_jac(rng, 3), state, first * (0.9 - 0.1 * i))
        np.testing.assert_allclose(state.initial_losses, first)
        np.testing.assert_allclose(jnp.sum(state.weights), 3.0, rtol=1e-6)
        assert np.all(np.asarray(state.weights) >= 0)
    assert int(state.count) == 6


def test_layer_choice_and_update():
    rng = np.random.default_rng(2)
    params = _params()
    jac = _jac(rng)
    losses = jnp.array([1.0, 3.0])
    shared = lambda path, _: "encoder" in jax.tree_util.keystr(path)

    def expected_weights(layer_leaf):
        norms = jnp.sqrt(jnp.sum(jnp.reshape(layer_leaf, (2, -1)) ** 2, axis=1))
        g = gradnorm_weights_grad(jnp.ones(2), norms, losses, losses, alpha=1.5)
        opt = optax.adam(0.025)
        step, _ = opt.update(g, opt.init(jnp.ones(2)), jnp.ones(2))
        w = jnp.maximum(jnp.ones(2) + step, 0.0)
        return 2 * w / jnp.sum(w)

    # Default: the last shared leaf with ≥ 2 dimensions (the encoder kernel, not the bias
    # and not the task-specific heads).
    tx = mtl.balancers.gradnorm(num_tasks=2, shared=shared)
    out, state = tx.update(jac, tx.init(params), params, task_losses=losses)
    np.testing.assert_allclose(
        state.next_weights, expected_weights(jac["encoder"]["kernel"]), rtol=1e-5
    )
    # Ones at the first update: the update is the plain sum, and the state records
    # the weights applied (ones), not the next step's.
    np.testing.assert_allclose(out["encoder"]["kernel"], jnp.sum(jac["encoder"]["kernel"], 0))
    np.testing.assert_allclose(mtl.balancers.task_weights(state), [1.0, 1.0])
    # The second update applies next_weights and records them.
    w1 = state.next_weights
    out, state = tx.update(jac, state, params, task_losses=losses)
    np.testing.assert_allclose(mtl.balancers.task_weights(state), w1, rtol=1e-6)
    np.testing.assert_allclose(
        out["encoder"]["kernel"], jnp.tensordot(w1, jac["encoder"]["kernel"], axes=1), rtol=1e-5
    )
    # The same with no params (the default rule resolved on the task Jacobian).
    _, state2 = tx.update(jac, tx.init(None), task_losses=losses)
    _, state1 = tx.update(jac, tx.init(params), params, task_losses=losses)
    np.testing.assert_allclose(state2.next_weights, state1.next_weights, rtol=1e-6)
    # The spec says which leaves the Gram matrix is taken on: the encoder kernel.
    assert isinstance(tx.spec.gram_mask, TreeMask)
    sel = resolve_mask(tx.spec.gram_mask, params)
    assert sel == {"encoder": {"bias": False, "kernel": True}, "heads": {"kernel": False}}, sel
    # An explicit layer: the bias.
    layer = lambda path, _: "bias" in jax.tree_util.keystr(path)
    tx = mtl.balancers.gradnorm(num_tasks=2, shared=shared, layer=layer)
    sel = resolve_mask(tx.spec.gram_mask, params)
    assert sel == {"encoder": {"bias": True, "kernel": False}, "heads": {"kernel": False}}, sel
    _, state = tx.update(jac, tx.init(params), params, task_losses=losses)
    np.testing.assert_allclose(
        state.next_weights, expected_weights(jac["encoder"]["bias"]), rtol=1e-5
    )
    with pytest.raises(ValueError, match="layer"):
        tx = mtl.balancers.gradnorm(
            num_tasks=2, shared=shared, layer=lambda p, _: "heads" in str(p)
        )
        tx.update(jac, tx.init(params), params, task_losses=losses)


@pytest.mark.reproduction
def test_toy_weight_of_low_sigma_task_grows():
    # Chen et al. 2018, section 4 in miniature: σ = (1, 100); the σ = 1 task's weight grows.
    data = mtl.data.toy_regression(
        2, sigmas=np.array([1.0, 100.0]), num_train=64, num_test=4, in_dim=16, out_dim=8
    )
    model = mtl.models.mlp_hps(2, hidden=16, out=8)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    params = model.init(jax.random.key(0), x)["params"]

    def loss_fn(p, batch):
        pred = model.apply({"params": p}, batch[0])
        return jnp.mean((pred - batch[1]) ** 2, axis=(1, 2))

    shared = mtl.models.HardParameterSharing.shared_mask(params)
    tx = mtl.balancers.gradnorm(num_tasks=2, alpha=0.12, shared=shared)
    step = mtl.training.make_train_step(loss_fn, tx, optax.adam(1e-3))
    state = step.init(params)
    for _ in range(40):
        state, _ = step(state, (x, y))
    w = np.asarray(state.balancer_state.weights)
    assert w[0] > 1.5 > 0.5 > w[1], w


def test_validation():
    with pytest.raises(ValueError, match="num_tasks"):
        mtl.balancers.gradnorm(num_tasks=0)
    with pytest.raises(ValueError, match="alpha"):
        mtl.balancers.gradnorm(num_tasks=2, alpha=-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        mtl.balancers.gradnorm(num_tasks=2, learning_rate=0.0)


def test_initial_loss_is_recorded_when_a_task_is_first_present():
    """A task absent at the first update (its masked-mean loss is a fake 0) gets its
    L_i(0) from the first update in which it is present; meanwhile its weight is 0 and
    the present tasks' new weights sum to the number present."""
    rng = np.random.default_rng(3)
    tx = mtl.balancers.gradnorm(num_tasks=3, learning_rate=0.1)
    params = _params()
    update = jax.jit(lambda j, s, ls, p: tx.update(j, s, params, task_losses=ls, task_presence=p))
    state = tx.init(params)
    absent = jnp.array([True, False, True])
    _, state = update(_jac(rng, 3), state, jnp.array([1.0, 0.0, 4.0]), absent)
    np.testing.assert_allclose(state.initial_losses, [1.0, 1.0, 4.0])  # task 1: still unset
    np.testing.assert_array_equal(state.seen, [True, False, True])
    assert float(state.weights[1]) == 0.0
    np.testing.assert_allclose(state.next_weights[np.array([0, 2])].sum(), 2.0, rtol=1e-6)
    assert float(state.next_weights[1]) == 1.0  # unchanged
    _, state = update(_jac(rng, 3), state, jnp.array([0.8, 2.5, 3.0]), jnp.ones(3, bool))
    np.testing.assert_allclose(state.initial_losses, [1.0, 2.5, 4.0])
    np.testing.assert_array_equal(state.seen, [True, True, True])
