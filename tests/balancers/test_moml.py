"""MOML against a float64 NumPy transcription of the paper's meta-update on quadratic tasks."""

import functools
import itertools
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
    assert_resumes_bit_identically,
    meta_train,
    quadratic_problem,
    task_losses,
)

K, D, ETA = 3, 4, 0.1


A, B, CA, CB, THETA = quadratic_problem(K, D, seed=0)
TRAIN = (jnp.asarray(A, jnp.float32), jnp.asarray(CA, jnp.float32))
VAL = (jnp.asarray(B, jnp.float32), jnp.asarray(CB, jnp.float32))
PARAMS = {"theta": jnp.asarray(THETA, jnp.float32)}


# ------------------------------------------------------------------ float64 transcription


def np_softmax(a, present):
    present = np.asarray(present, bool)
    e = np.where(present, np.exp(a - a[present].max()), 0.0)
    return e / e.sum()


def np_unroll(theta, alpha, steps, present):
    s = np_softmax(alpha, present)
    for _ in range(steps):
        g = np.einsum("kij,kj->ki", A, theta[None] - CA) * present[:, None]
        theta = theta - ETA * s @ g
    return theta


def np_val_losses(theta):
    r = theta[None] - CB
    return 0.5 * np.einsum("ki,kij,kj->k", r, B, r)


def np_hyper_closed(theta, alpha, present):
    """Paper, one step: ∂F_i/∂α = −η ⟨∇F_i(θ'), ∇L_j(θ)⟩_j (diag(s) − s sᵀ)."""
    s = np_softmax(alpha, present)
    g = np.einsum("kij,kj->ki", A, theta[None] - CA) * present[:, None]
    theta2 = theta - ETA * s @ g
    v = np.einsum("kij,kj->ki", B, theta2[None] - CB)
    return -ETA * (v @ g.T) @ (np.diag(s) - np.outer(s, s))


def np_hyper_fd(theta, alpha, steps, present, h=1e-6):
    """∂F_i(θ_T(α))/∂α by central differences of the unrolled look-ahead, float64."""
    cols = []
    for e in np.eye(K):
        plus = np_val_losses(np_unroll(theta, alpha + h * e, steps, present))
        minus = np_val_losses(np_unroll(theta, alpha - h * e, steps, present))
        cols.append((plus - minus) / (2 * h))
    return np.stack(cols, 1)


def np_min_norm(g):
    """argmin_{γ ∈ Δ} γᵀ G γ by enumerating the faces of the simplex (exact, small K)."""
    k = g.shape[0]
    best, arg = np.inf, None
    for r in range(1, k + 1):
        for sup in itertools.combinations(range(k), r):
            idx = list(sup)
            kkt = np.block([[g[np.ix_(idx, idx)], np.ones((r, 1))], [np.ones((1, r)), 0.0]])
            sol = np.linalg.lstsq(kkt, np.r_[np.zeros(r), 1.0], rcond=None)[0][:r]
            if np.all(sol >= -1e-12):
                w = np.zeros(k)
                w[idx] = sol
                val = w @ g @ w
                if val < best - 1e-15:
                    best, arg = val, w
    return arg


def np_direction(h, present=None):
    """MOML (LibMTL normalisation): MGDA on the rows h_i / ‖h_i‖ of the present objectives."""
    present = np.ones(K, bool) if present is None else present
    hn = h / np.linalg.norm(h, axis=1, keepdims=True)
    idx = np.flatnonzero(present)
    gamma = np.zeros(K)
    gamma[idx] = np_min_norm(hn[idx] @ hn[idx].T)
    return gamma @ hn, gamma


def np_adam(g, m, v, t, lr):
    m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
    step = lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return step, m, v


ALL = np.ones(K, bool)


def test_closed_form_transcription_is_the_derivative_of_the_lookahead():
    alpha = np.array([0.3, -0.5, 0.2])
    np.testing.assert_allclose(
        np_hyper_closed(THETA, alpha, ALL), np_hyper_fd(THETA, alpha, 1, ALL), rtol=1e-6
    )


def test_pure_hypergradients_and_direction_match_float64():
    alpha = np.array([0.3, -0.5, 0.2])
    s = np_softmax(alpha, ALL)
    g = np.einsum("kij,kj->ki", A, THETA[None] - CA)
    v = np.einsum("kij,kj->ki", B, (THETA - ETA * s @ g)[None] - CB)
    got = jax.jit(lambda c, a: mtl.weighting.moml_hypergradients(c, a, inner_lr=ETA))(
        jnp.asarray(v @ g.T, jnp.float32), jnp.asarray(alpha, jnp.float32)
    )
    want = np_hyper_closed(THETA, alpha, ALL)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    both = jax.jit(
        lambda h: [mtl.weighting.moml_direction(h, normalization=n) for n in ("l2", "none")]
    )
    (d, gamma), (d_raw, _) = both(jnp.asarray(want, jnp.float32))
    d_want, g_want = np_direction(want)
    np.testing.assert_allclose(gamma, g_want, atol=2e-4)
    np.testing.assert_allclose(d, d_want, atol=2e-4)
    # the paper's plain MGDA: the min-norm point of the raw rows
    np.testing.assert_allclose(d_raw, np_min_norm(want @ want.T) @ want, rtol=1e-3, atol=1e-6)


MASK = jnp.ones(K, bool)


@functools.cache
def _moml(steps):
    """MOML (meta_lr 0.05) and its jitted meta-update, shared by the tests (one compile)."""
    tx = mtl.balancers.moml(task_losses, num_tasks=K, inner_lr=ETA, meta_lr=0.05, inner_steps=steps)
    return tx, jax.jit(tx.meta_update)


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_updates_match_the_float64_transcription(steps):
    lr = 0.05
    tx, update = _moml(steps)
    state = tx.init(PARAMS)
    np.testing.assert_allclose(state.weights, 1 / K)
    alpha, m, v = np.zeros(K), np.zeros(K), np.zeros(K)
    for t in range(1, 4):
        h = np_hyper_closed(THETA, alpha, ALL) if steps == 1 else np_hyper_fd(THETA, alpha, 2, ALL)
        d, _ = np_direction(h)
        step, m, v = np_adam(d, m, v, t, lr)
        alpha = alpha - step
        state = update(state, PARAMS, TRAIN, VAL, task_presence=MASK, val_presence=MASK)
    np.testing.assert_allclose(state.logits, alpha, rtol=1e-3, atol=1e-5)
    # the training step applies softmax(α) to the losses
    jac = jax.jacrev(task_losses)(PARAMS, TRAIN)
    upd, new = tx.update(jac, state, task_losses=task_losses(PARAMS, TRAIN))
    s = np_softmax(alpha, ALL)
    np.testing.assert_allclose(upd["theta"], s @ np.asarray(jac["theta"]), rtol=1e-4)
    np.testing.assert_allclose(mtl.balancers.task_weights(new), s, rtol=1e-4)


def test_presence_train_task_frozen_and_val_objective_left_out():
    tx, update = _moml(1)  # the compiled meta-update of the transcription test
    mask = MASK
    state = update(tx.init(PARAMS), PARAMS, TRAIN, VAL, task_presence=mask, val_presence=mask)
    alpha = np.asarray(state.logits, np.float64)
    m0 = np.asarray(state.meta_opt_state[0].mu, np.float64)
    v0 = np.asarray(state.meta_opt_state[0].nu, np.float64)

    def expected(present, val_present):
        d, gamma = np_direction(np_hyper_closed(THETA, alpha, present), val_present)
        step, m, v = np_adam(d, m0, v0, 2, 0.05)
        return np.where(present, alpha - step, alpha), np.where(present, m, m0), gamma

    for present, val_present in [
        (np.array([True, False, True]), ALL),  # task 1 out of the look-ahead, frozen
        (ALL, np.array([True, True, False])),  # objective 2 out of MGDA's simplex
    ]:
        new = update(
            state,
            PARAMS,
            TRAIN,
            VAL,
            task_presence=jnp.asarray(present),
            val_presence=jnp.asarray(val_present),
        )
        want, m_want, gamma = expected(present, val_present)
        assert np.all(gamma[~val_present] == 0.0)
        np.testing.assert_allclose(new.logits, want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(new.meta_opt_state[0].mu, m_want, rtol=1e-3, atol=1e-9)
        absent = ~present
        assert np.all(np.asarray(new.logits)[absent] == np.asarray(state.logits)[absent])
    # no validation objective at all: the state stays as it was
    none = update(state, PARAMS, TRAIN, VAL, task_presence=mask, val_presence=~mask)
    np.testing.assert_array_equal(none.logits, state.logits)
    present = np.array([True, False, True])
    # the step: weight 0 for the absent task, a NaN in its gradient and loss stays out
    jac = jax.tree_util.tree_map(
        lambda j: j.at[1].set(jnp.nan), jax.jacrev(task_losses)(PARAMS, TRAIN)
    )
    losses = task_losses(PARAMS, TRAIN).at[1].set(jnp.nan)
    upd, st = tx.update(jac, new, task_losses=losses, task_presence=jnp.asarray(present))
    assert np.all(np.isfinite(upd["theta"])) and st.weights[1] == 0.0
    np.testing.assert_allclose(np.sum(st.weights), 1.0, rtol=1e-6)


def test_jitted_training_downweights_a_task_with_corrupted_training_labels(tmp_path):
    # One shared linear model, two tasks with the same true target; task 1's training
    # labels come from a conflicting target, so raising its weight moves the look-ahead
    # away from both validation optima and MGDA lowers its logit.
    def loss_fn(p, batch):
        x, y = batch  # y: [N, 2]
        return jnp.mean(((x @ p["w"])[:, None] - y) ** 2, axis=0)

    rng = np.random.default_rng(0)
    a, b = np.array([1.0, 0.0, 0.0]), np.array([-1.0, 1.0, 0.0])
    x, xv = (jnp.asarray(rng.normal(size=(32, 3)), jnp.float32) for _ in range(2))
    train_b = (x, jnp.stack([x @ a, x @ b], 1).astype(jnp.float32))
    val_b = (xv, jnp.stack([xv @ a, xv @ a], 1).astype(jnp.float32))
    tx = mtl.balancers.make("moml", num_tasks=2, task_loss_fn=loss_fn, inner_lr=0.05, meta_lr=0.05)
    step = mtl.training.make_train_step(loss_fn, tx, optax.sgd(0.05))

    train = meta_train(tx, step)

    state = step.init({"w": jnp.zeros(3)})
    for _ in range(20):
        state, metrics = train(state, train_b, val_b)
    w = np.asarray(state.balancer_state.weights)
    assert not metrics["skipped"] and np.all(np.isfinite(w))
    np.testing.assert_allclose(metrics["weights"], w, rtol=1e-6)
    np.testing.assert_allclose(w, np_softmax(np.asarray(state.balancer_state.logits), [1, 1]), 1e-5)
    assert w[1] < 0.4 < 0.6 < w[0], w
    assert_resumes_bit_identically(train, state, train_b, val_b, tmp_path / "moml")


def test_meta_optimizer_replaces_adam_and_both_routes_apply_the_weights():
    tx = mtl.balancers.moml(task_losses, num_tasks=K, inner_lr=ETA, meta_optimizer=optax.sgd(2.0))
    bstate = jax.jit(tx.meta_update)(tx.init(PARAMS), PARAMS, TRAIN, VAL)
    d, _ = np_direction(np_hyper_closed(THETA, np.zeros(K), ALL))
    assert np.abs(d).max() > 0.05
    np.testing.assert_allclose(bstate.logits, -2.0 * d, rtol=1e-3, atol=1e-6)  # plain SGD
    # MOML is loss-only: the single-backward route and the Jacobian route agree
    out = {}
    for mode in ("loss", "jacobian"):
        step = mtl.training.make_train_step(task_losses, tx, optax.sgd(0.05), mode=mode)
        state = step.init(PARAMS)._replace(balancer_state=bstate)
        for _ in range(3):
            state, metrics = step(state, TRAIN)
        out[mode] = (state.params, metrics["weights"])
    np.testing.assert_allclose(out["loss"][1], np_softmax(-2.0 * d, ALL), rtol=1e-4)
    for a, b in zip(*(jax.tree_util.tree_leaves(out[m]) for m in ("loss", "jacobian"))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 0}, "num_tasks"),
        ({"inner_lr": 0.0}, r"inner_lr must be a finite number in \(0, inf\), got 0.0"),
        ({"meta_lr": -1.0}, r"meta_lr must be a finite number in \(0, inf\)"),
        ({"inner_steps": 0}, "inner_steps must be a positive int"),
        ({"normalization": "loss"}, "normalization must be 'l2' or 'none'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    full = {"num_tasks": K, "inner_lr": ETA, **kwargs}
    with pytest.raises(ValueError, match=match):
        mtl.balancers.moml(task_losses, **full)


def test_bad_presence_and_shapes_raise():
    tx = mtl.balancers.moml(task_losses, num_tasks=K, inner_lr=ETA)
    with pytest.raises(ValueError, match="val_presence must be a"):
        tx.meta_update(tx.init(PARAMS), PARAMS, TRAIN, VAL, val_presence=jnp.ones(2, bool))
    with pytest.raises(ValueError, match="logits must have shape"):
        mtl.weighting.moml_hypergradients(jnp.eye(3), jnp.zeros(2), inner_lr=0.1)
    with pytest.raises(ValueError, match="hypergradients must be a square"):
        mtl.weighting.moml_direction(jnp.ones((3, 2)))


def test_direction_is_exactly_zero_when_zero_is_in_the_hull():
    # Hypergradients from a data-parallel run (K = 3): zero lies inside their convex
    # hull, so MGDA's min-norm point is 0 and the logits are Pareto-stationary. A
    # rounding residue (~5e-8 here) in place of 0 is what Adam, which divides by its
    # running second moment, turns into full meta_lr steps whose signs depend on the
    # summation order (one device against four).
    h = jnp.asarray(
        [
            [-0.008366362, 0.005591201, 0.0027751615],
            [0.029977417, -0.05560925, 0.025631836],
            [0.0073883827, 0.0055990163, -0.012987399],
        ],
        jnp.float32,
    )
    hn = np.asarray(h, np.float64) / np.linalg.norm(np.asarray(h, np.float64), axis=1)[:, None]
    gamma64 = np_min_norm(hn @ hn.T)
    # 0 is inside the hull (up to the float32 rounding of the rows' entries)
    assert np.all(gamma64 > 0.1) and np.linalg.norm(gamma64 @ hn) < 1e-7
    for norm in ("l2", "none"):
        d, gamma = jax.jit(lambda h, n=norm: mtl.weighting.moml_direction(h, normalization=n))(h)
        np.testing.assert_array_equal(d, np.zeros(K))
        assert np.all(np.isfinite(gamma)) and np.all(np.asarray(gamma) > 0)
    # Adam on the exact 0 leaves the logits where they are
    logits, _ = mtl.balancers._bilevel.meta_step(
        optax.adam(1e-3), d, jnp.zeros(K), optax.adam(1e-3).init(jnp.zeros(K)), MASK
    )
    np.testing.assert_array_equal(logits, np.zeros(K))
