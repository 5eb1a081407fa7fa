"""DWA: the softmax of loss ratios on a scripted loss sequence, and the two routes agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl


def _softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def test_weights_on_scripted_losses():
    losses = np.array([[2.0, 1.0, 4.0], [1.0, 0.9, 3.0], [0.5, 0.8, 2.9], [0.4, 0.4, 2.0]])
    tx = mtl.balancers.dwa(num_tasks=3, temperature=2.0)
    state = tx.init(None)
    jac = {"w": jnp.eye(3)}
    update = jax.jit(lambda s, ls: tx.update(jac, s, task_losses=ls))
    got = []
    for row in losses:
        u, state = update(state, jnp.asarray(row, jnp.float32))
        got.append(np.asarray(u["w"]))
    # Steps 0 and 1 have no two-step history: equal weights.
    np.testing.assert_allclose(got[0], np.ones(3))
    np.testing.assert_allclose(got[1], np.ones(3))
    for t in (2, 3):
        expected = 3 * _softmax(losses[t - 1] / losses[t - 2] / 2.0)
        np.testing.assert_allclose(got[t], expected, rtol=1e-6)
    np.testing.assert_allclose(mtl.balancers.task_weights(state), got[3], rtol=1e-6)
    # The task whose loss fell least gets the largest weight.
    assert np.argmax(got[2]) == 1


def test_epoch_averaging():
    tx = mtl.balancers.dwa(num_tasks=2, temperature=1.0, steps_per_epoch=2)
    seq = np.array([[4.0, 4.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0], [9.0, 9.0], [9.0, 9.0]])
    state = tx.init(None)
    ws = []
    for row in seq:
        w, state = tx.spec.loss_weights(jnp.asarray(row, jnp.float32), state)
        ws.append(np.asarray(w))
    for t in range(4):
        np.testing.assert_allclose(ws[t], np.ones(2))
    epoch_means = [seq[0:2].mean(0), seq[2:4].mean(0)]
    expected = 2 * _softmax(epoch_means[1] / epoch_means[0])
    np.testing.assert_allclose(ws[4], expected, rtol=1e-6)
    np.testing.assert_allclose(ws[5], expected, rtol=1e-6)


def test_pure_function_guards_zero_history():
    w = mtl.weighting.dwa_weights(jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]), temperature=2.0)
    np.testing.assert_allclose(w, 2 * _softmax(np.array([1.0, 2.0]) / 2.0), rtol=1e-6)


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="temperature"):
        mtl.balancers.dwa(num_tasks=2, temperature=0.0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        mtl.balancers.dwa(num_tasks=2, steps_per_epoch=0)


def test_epoch_mean_is_over_the_calls_in_which_the_task_was_present():
    """The fake 0 loss of an absent task is not averaged in; a task absent for a whole
    epoch keeps its history, and the softmax runs over the present tasks."""
    tx = mtl.balancers.dwa(num_tasks=2, temperature=1.0, steps_per_epoch=2)
    fn = jax.jit(tx.spec.loss_weights)
    seq = [
        ([4.0, 4.0], [True, True]),
        ([2.0, 0.0], [True, False]),  # epoch 0: task 1 mean = 4
        ([3.0, 1.0], [True, True]),
        ([1.0, 1.0], [True, True]),  # epoch 1: means 2, 1
        ([5.0, 0.0], [True, False]),
        ([5.0, 0.0], [True, False]),  # epoch 2: task 1 absent throughout
    ]
    state = tx.init(None)
    ws = []
    for row, p in seq:
        w, state = fn(jnp.asarray(row), state, jnp.asarray(p))
        ws.append(np.asarray(w))
    np.testing.assert_allclose(ws[1], [1.0, 0.0])
    np.testing.assert_allclose(ws[4], 1.0 * np.array([1.0, 0.0]))  # one present task
    np.testing.assert_allclose(state.prev_losses, [5.0, 1.0])
    np.testing.assert_allclose(state.prev_prev_losses, [2.0, 4.0])
    w, _ = fn(jnp.array([1.0, 1.0]), state, jnp.ones(2, bool))
    np.testing.assert_allclose(w, 2 * _softmax(np.array([5.0 / 2.0, 1.0 / 4.0])), rtol=1e-6)
