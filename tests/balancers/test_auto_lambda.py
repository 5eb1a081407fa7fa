"""Auto-Lambda against a float64 NumPy transcription of its update on quadratic tasks."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bilevel_problem import (
    meta_train,
    quadratic_problem,
    task_losses,
)

K, D, ALPHA = 3, 4, 0.1


A, B, CA, CB, THETA = quadratic_problem(K, D, seed=0)


def np_hypergradient(theta, lam, alpha, primary=None, present=None):
    """∂/∂λ of Σ_{k∈P} L_k^val(θ − α Σ_j λ_j ∇L_j^train(θ)), in closed form, float64."""
    present = np.ones(K, bool) if present is None else present
    primary = np.ones(K, bool) if primary is None else primary
    g = np.einsum("kij,kj->ki", A, theta[None] - CA)  # ∇L_k^train(θ)
    g = g * present[:, None]
    theta2 = theta - alpha * (lam[:, None] * g).sum(0)
    d = (np.einsum("kij,kj->ki", B, theta2[None] - CB) * primary[:, None]).sum(0)
    return -alpha * g @ d


def np_objective(theta, lam, alpha):
    g = np.einsum("kij,kj->ki", A, theta[None] - CA)
    theta2 = theta - alpha * (lam[:, None] * g).sum(0)
    r = theta2[None] - CB
    return 0.5 * np.einsum("ki,kij,kj->", r, B, r)


TRAIN = (jnp.asarray(A, jnp.float32), jnp.asarray(CA, jnp.float32))
VAL = (jnp.asarray(B, jnp.float32), jnp.asarray(CB, jnp.float32))
PARAMS = {"theta": jnp.asarray(THETA, jnp.float32)}


def test_closed_form_is_the_derivative_of_the_lookahead_objective():
    # The transcription itself, against central differences of F(λ) in float64.
    lam = np.array([0.3, 1.2, 0.7])
    h = 1e-6
    fd = [
        (np_objective(THETA, lam + h * e, ALPHA) - np_objective(THETA, lam - h * e, ALPHA))
        / (2 * h)
        for e in np.eye(K)
    ]
    np.testing.assert_allclose(np_hypergradient(THETA, lam, ALPHA), fd, rtol=1e-6)


@pytest.mark.parametrize("method", ["finite_difference", "exact"])
def test_hypergradient_matches_float64_closed_form(method):
    lam = np.array([0.3, 1.2, 0.7])
    got, val = jax.jit(
        lambda p, w: mtl.balancers.auto_lambda_hypergradient(
            task_losses, p, TRAIN, VAL, w, inner_lr=ALPHA, method=method
        )
    )(PARAMS, jnp.asarray(lam, jnp.float32))
    want = np_hypergradient(THETA, lam, ALPHA)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(val, np_objective(THETA, lam, ALPHA), rtol=1e-5)


def test_primary_tasks_and_presence():
    lam = np.array([0.3, 1.2, 0.7])
    primary = np.array([True, False, False])  # auxiliary learning: only task 0 is scored
    present = np.array([True, True, False])
    got, _ = mtl.balancers.auto_lambda_hypergradient(
        task_losses,
        PARAMS,
        TRAIN,
        VAL,
        jnp.asarray(lam, jnp.float32),
        inner_lr=ALPHA,
        primary=jnp.asarray(primary),
        presence=jnp.asarray(present),
        method="exact",
    )
    want = np_hypergradient(THETA, lam, ALPHA, primary, present)
    assert want[2] == 0.0 and got[2] == 0.0
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)


def test_meta_update_is_adam_on_the_hypergradient_and_the_step_applies_lambda():
    tx = mtl.balancers.auto_lambda(task_losses, num_tasks=K, inner_lr=ALPHA, meta_lr=0.01)
    state = tx.init(PARAMS)
    np.testing.assert_allclose(state.lam, 0.1)
    np.testing.assert_allclose(state.weights, 0.1)
    # NumPy Adam (b1=0.9, b2=0.999, eps=1e-8) on the closed-form hypergradient, 3 steps.
    lam, m, v = np.full(K, 0.1), np.zeros(K), np.zeros(K)
    update = jax.jit(tx.meta_update)
    for t in range(1, 4):
        g = np_hypergradient(THETA, lam, ALPHA)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        lam = lam - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        state = update(state, PARAMS, TRAIN, VAL)
    np.testing.assert_allclose(state.lam, lam, rtol=1e-4)
    # The training step applies λ: the update is Σ_k λ_k ∇L_k.
    jac = jax.jacrev(task_losses)(PARAMS, TRAIN)
    upd, new = tx.update(jac, state, task_losses=task_losses(PARAMS, TRAIN))
    np.testing.assert_allclose(
        upd["theta"], np.asarray(state.lam) @ np.asarray(jac["theta"]), rtol=1e-5
    )
    np.testing.assert_array_equal(mtl.balancers.task_weights(new), state.lam)


def test_absent_task_keeps_lambda_and_moments_and_gets_weight_zero():
    tx = mtl.balancers.auto_lambda(task_losses, num_tasks=K, inner_lr=ALPHA, meta_lr=0.01)
    state = tx.meta_update(tx.init(PARAMS), PARAMS, TRAIN, VAL)
    present = jnp.array([True, False, True])
    new = tx.meta_update(state, PARAMS, TRAIN, VAL, task_presence=present)
    assert new.lam[1] == state.lam[1]
    mu_old, mu_new = state.meta_opt_state[0].mu, new.meta_opt_state[0].mu
    assert mu_new[1] == mu_old[1] and mu_new[0] != mu_old[0]
    assert new.lam[0] != state.lam[0]
    losses = task_losses(PARAMS, TRAIN).at[1].set(jnp.nan)  # an absent task's NaN stays out
    jac = jax.tree_util.tree_map(
        lambda j: j.at[1].set(jnp.nan), jax.jacrev(task_losses)(PARAMS, TRAIN)
    )
    upd, after = tx.update(jac, new, task_losses=losses, task_presence=present)
    assert np.all(np.isfinite(upd["theta"]))
    # the recorded weights are those applied: 0 for the absent task (λ was recorded before)
    recorded = np.asarray(mtl.balancers.task_weights(after))
    np.testing.assert_array_equal(recorded, np.where(present, new.lam, 0.0))
    np.testing.assert_allclose(
        upd["theta"], recorded @ np.where(present[:, None], jac["theta"], 0.0), rtol=1e-5
    )


def test_trains_inside_a_jitted_step_with_a_validation_batch():
    # One shared linear model; task 1's target conflicts with the primary task 0's, so
    # its look-ahead hurts task 0's validation loss and its weight must fall.
    k = 2

    def loss_fn(p, batch):
        x, y = batch  # y: [N, K]
        return jnp.mean(((x @ p["w"])[:, None] - y) ** 2, axis=0)

    rng = np.random.default_rng(0)
    a, b = np.array([1.0, 0.0, 0.0]), np.array([-1.0, 1.0, 0.0])
    x, xv = (jnp.asarray(rng.normal(size=(32, 3)), jnp.float32) for _ in range(2))
    y, yv = (jnp.stack([z @ a, z @ b], 1).astype(jnp.float32) for z in (x, xv))
    params = {"w": jnp.zeros(3)}
    primary = jnp.array([True, False])
    tx = mtl.balancers.auto_lambda(
        loss_fn, num_tasks=k, inner_lr=0.05, meta_lr=0.05, weight_init=1.0, primary=primary
    )
    step = mtl.training.make_train_step(loss_fn, tx, optax.sgd(0.05))

    train = meta_train(tx, step)

    state = step.init(params)
    for _ in range(30):
        state, metrics = train(state, (x, y), (xv, yv))
    w = np.asarray(state.balancer_state.weights)
    assert np.all(np.isfinite(w)) and not metrics["skipped"]
    assert w[1] < 1.0 - 0.5 and w[0] > 1.0, w
    np.testing.assert_allclose(metrics["weights"], w, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 0}, "num_tasks"),
        ({"inner_lr": 0.0}, r"inner_lr must be a finite number in \(0, inf\), got 0.0"),
        ({"meta_lr": -1.0}, r"meta_lr must be a finite number in \(0, inf\)"),
        ({"eps": 0}, r"eps must be a finite number in \(0, inf\)"),
        ({"method": "hessian"}, "method must be one of"),
        ({"primary": [1, 0, 0]}, "primary must be a"),
        ({"primary": [False, False, False]}, "primary must be a"),
        ({"weight_init": "1"}, "weight_init must be a number"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    full = {"num_tasks": K, "inner_lr": ALPHA, **kwargs}
    with pytest.raises(ValueError, match=match):
        mtl.balancers.auto_lambda(task_losses, **full)
