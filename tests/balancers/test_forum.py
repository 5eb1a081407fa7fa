"""FORUM against a float64 NumPy transcription of the paper's step on quadratic tasks."""

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

K, D, ETA, PHI, T = 3, 4, 0.1, 0.1, 3


A, B, CA, CB, THETA = quadratic_problem(K, D, seed=1, theta_scale=3.0)
TRAIN = (jnp.asarray(A, jnp.float32), jnp.asarray(CA, jnp.float32))
VAL = (jnp.asarray(B, jnp.float32), jnp.asarray(CB, jnp.float32))
PARAMS = {"theta": jnp.asarray(THETA, jnp.float32)}
ALL = np.ones(K, bool)


# ------------------------------------------------------------------ float64 transcription


def np_losses(mats, centres, theta):
    r = theta[None] - centres
    return 0.5 * np.einsum("ki,kij,kj->k", r, mats, r)


def np_grads(mats, centres, theta):
    return np.einsum("kij,kj->ki", mats, theta[None] - centres)


def np_dual(rows, q, phi, present):
    """min_{λ ∈ Δ_S, ν ≥ 0} ½‖Σ λ_i r_i + ν q‖² − ν φ ‖q‖², by enumerating faces (exact)."""
    a = np.vstack([rows, q[None]])
    m = a @ a.T
    lin = np.zeros(K + 1)
    lin[K] = -phi * (q @ q)
    idx_present = list(np.flatnonzero(present))
    best, arg = np.inf, None
    for r in range(1, len(idx_present) + 1):
        for sup in itertools.combinations(idx_present, r):
            for with_nu in (False, True):
                idx = list(sup) + ([K] if with_nu else [])
                ones = np.array([1.0] * r + [0.0] * with_nu)
                kkt = np.block([[m[np.ix_(idx, idx)], ones[:, None]], [ones[None], 0.0]])
                rhs = np.r_[-lin[idx], 1.0]
                sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0][: len(idx)]
                if np.all(sol >= -1e-12):
                    y = np.zeros(K + 1)
                    y[idx] = sol
                    val = 0.5 * y @ m @ y + lin @ y
                    if val < best - 1e-14:
                        best, arg = val, y
    return arg[:K], arg[K]


def np_meta_update(st, present=ALL, val_present=ALL):
    """One FORUM step in float64: returns the new state and the model's update direction."""
    theta, alpha, lam_bar, count, m, v = st
    e = np.where(present, np.exp(alpha - alpha[present].max()), 0.0)
    s = e / e.sum()
    g = np_grads(A, CA, theta) * present[:, None]
    grad_f = s @ g
    inner = theta.copy()
    for _ in range(T):
        inner = inner - ETA * s @ (np_grads(A, CA, inner) * present[:, None])
    dl = (np_losses(A, CA, theta) - np_losses(A, CA, inner)) * present
    grad_alpha = s * (dl - s @ dl)  # (diag(s) − s sᵀ) ΔL
    q = np.r_[grad_alpha, grad_f]  # ∇q in z = (α, θ)
    gf = np_grads(B, CB, theta) * val_present[:, None]
    norms = np.linalg.norm(gf, axis=1)
    rows = np.hstack([np.zeros((K, K)), gf / np.where(norms > 0, norms, 1.0)[:, None]])
    lam_t, nu_t = np_dual(rows, q, PHI, val_present)
    pi = np.where(val_present, PHI - rows @ q / (q @ q), 0.0)
    beta = (1.0 + count) ** -0.75
    lam_bar = np.where(val_present, lam_bar + beta * (lam_t - lam_bar), lam_bar)
    lam_used = np.where(val_present, lam_bar, 0.0)
    nu = max(lam_used @ pi, 0.0)
    direction = lam_used @ rows[:, K:]
    weights = nu * s
    # Adam on α along ν ∇_α q; absent training tasks keep α and their moments
    grad = nu * grad_alpha
    m2, v2 = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
    t = count + 1
    step = 1e-3 * (m2 / (1 - 0.9**t)) / (np.sqrt(v2 / (1 - 0.999**t)) + 1e-8)
    alpha = np.where(present, alpha - step, alpha)
    m, v = np.where(present, m2, m), np.where(present, v2, v)
    update = direction + weights @ np_grads(A, CA, theta) * 1.0
    return (theta, alpha, lam_bar, count + 1, m, v), (lam_t, nu_t, weights, direction, update)


def test_dual_solution_is_the_steepest_constrained_common_descent():
    # The transcription's (λ, ν) give v = −(Σλ r + ν q) satisfying the direction
    # problem's KKT conditions: ⟨q, v⟩ ≤ −φ‖q‖² (equality when ν > 0), and
    # ⟨r_i, v⟩ = max_j ⟨r_j, v⟩ wherever λ_i > 0.
    rng = np.random.default_rng(3)
    for _ in range(5):
        rows, q = rng.normal(size=(K, 6)), rng.normal(size=6) * rng.uniform(0.1, 3)
        lam, nu = np_dual(rows, q, PHI, ALL)
        v = -(lam @ rows + nu * q)
        assert q @ v <= -PHI * (q @ q) + 1e-9
        if nu > 1e-9:
            np.testing.assert_allclose(q @ v, -PHI * (q @ q), rtol=1e-8)
        dots = rows @ v
        np.testing.assert_allclose(dots[lam > 1e-9], dots.max(), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("normalize", [True, False])
def test_pure_weights_match_the_exact_dual(normalize):
    rng = np.random.default_rng(4)
    present = np.array([True, True, False])
    fn = jax.jit(
        lambda g, c, n, p: mtl.weighting.forum_weights(
            g, c, n, phi=PHI, normalize=normalize, presence=p
        )
    )
    for i in range(4):
        rows, q = rng.normal(size=(K, 6)), rng.normal(size=6) * 10.0 ** rng.uniform(-1, 1)
        rows *= 10.0 ** rng.uniform(-1, 1, size=(K, 1))
        p = present if i % 2 else ALL
        grad_rows = rows / np.linalg.norm(rows, axis=1, keepdims=True) if normalize else rows
        lam_want, nu_want = np_dual(grad_rows * p[:, None], q, PHI, p)
        gram = np.where(np.outer(p, p), rows @ rows.T, np.nan)  # absent NaNs stay out
        cross = np.where(p, rows @ q, np.nan)
        lam, pi = fn(*(jnp.asarray(x, jnp.float32) for x in (gram, cross, q @ q)), jnp.asarray(p))
        np.testing.assert_allclose(lam, lam_want, atol=2e-3)
        assert np.all(np.asarray(lam)[~p] == 0.0)
        np.testing.assert_allclose(max(float(lam @ pi), 0.0), nu_want, rtol=2e-3, atol=1e-4)


def _np_state():
    return (THETA.copy(), np.zeros(K), np.zeros(K), 0, np.zeros(K), np.zeros(K))


def _tx(**kw):
    return mtl.balancers.forum(task_losses, num_tasks=K, inner_lr=ETA, inner_steps=T, phi=PHI, **kw)


def test_meta_updates_and_step_match_the_float64_transcription():
    tx = _tx()
    state = tx.init(PARAMS)
    update = jax.jit(tx.meta_update)
    ref = _np_state()
    jac = jax.jacrev(task_losses)(PARAMS, TRAIN)
    nus = []
    for _ in range(3):
        ref, (_, nu, weights, direction, upd_want) = np_meta_update(ref)
        nus.append(nu)
        state = update(state, PARAMS, TRAIN, VAL)
        np.testing.assert_allclose(state.lam, ref[2], atol=2e-3)
        np.testing.assert_allclose(state.step_weights, weights, rtol=5e-3, atol=1e-5)
        np.testing.assert_allclose(state.direction[0], direction, atol=2e-3)
        np.testing.assert_allclose(state.logits, ref[1], rtol=1e-3, atol=1e-6)
        upd, _ = tx.update(jac, state, PARAMS, task_losses=task_losses(PARAMS, TRAIN))
        np.testing.assert_allclose(upd["theta"], upd_want, rtol=5e-3, atol=2e-3)
    assert max(nus) > 0.0  # the constraint was active, so α moved
    assert not np.allclose(ref[1], 0.0)


def test_presence_in_training_and_validation_batches():
    tx = _tx()
    update = jax.jit(tx.meta_update)
    mask = jnp.ones(K, bool)
    state = update(tx.init(PARAMS), PARAMS, TRAIN, VAL, task_presence=mask, val_presence=mask)
    ref = _np_state()
    ref, _ = np_meta_update(ref)
    present, val_present = np.array([True, False, True]), np.array([True, True, False])
    new = update(
        state,
        PARAMS,
        TRAIN,
        VAL,
        task_presence=jnp.asarray(present),
        val_presence=jnp.asarray(val_present),
    )
    ref, (_, _, weights, direction, _) = np_meta_update(ref, present, val_present)
    assert new.logits[1] == state.logits[1] and new.step_weights[1] == 0.0
    assert new.meta_opt_state[0].mu[1] == state.meta_opt_state[0].mu[1]
    assert new.lam[2] == state.lam[2]  # absent from validation: λ̄ kept, no share
    np.testing.assert_allclose(new.lam, ref[2], atol=2e-3)
    np.testing.assert_allclose(new.step_weights, weights, rtol=5e-3, atol=1e-5)
    np.testing.assert_allclose(new.direction[0], direction, atol=2e-3)
    # no validation task at all: a zero update, α and λ̄ as they were, nothing NaN
    none = update(state, PARAMS, TRAIN, VAL, task_presence=mask, val_presence=~mask)
    np.testing.assert_array_equal(none.logits, state.logits)
    np.testing.assert_array_equal(none.lam, state.lam)
    assert not np.any(none.step_weights) and not np.any(none.direction[0])
    # the step: an absent task's NaN gradient and loss stay out
    jac = jax.tree_util.tree_map(
        lambda j: j.at[1].set(jnp.nan), jax.jacrev(task_losses)(PARAMS, TRAIN)
    )
    losses = task_losses(PARAMS, TRAIN).at[1].set(jnp.nan)
    upd, _ = tx.update(jac, new, PARAMS, task_losses=losses, task_presence=jnp.asarray(present))
    assert np.all(np.isfinite(upd["theta"]))
    # absent from the step only (the meta-update had every task): weight 0, recorded 0
    assert state.step_weights[1] > 0.0
    upd, after = tx.update(
        jac, state, PARAMS, task_losses=losses, task_presence=jnp.asarray(present)
    )
    recorded = np.asarray(mtl.balancers.task_weights(after))
    np.testing.assert_array_equal(recorded, np.where(present, state.step_weights, 0.0))
    rows = np.where(present[:, None], np.asarray(jac["theta"]), 0.0)
    want = np.asarray(state.direction[0]) + recorded @ rows
    np.testing.assert_allclose(upd["theta"], want, rtol=1e-5, atol=1e-6)


def test_shared_leaves_get_the_direction_the_others_the_plain_sum():
    def losses2(p, batch):
        return task_losses({"theta": p["enc"]}, batch) + jnp.sum(p["head"] ** 2)

    params = {"enc": PARAMS["theta"], "head": jnp.ones(2)}
    tx = mtl.balancers.forum(losses2, num_tasks=K, inner_lr=ETA, shared="enc")
    state = jax.jit(tx.meta_update)(tx.init(params), params, TRAIN, VAL)
    assert len(state.direction) == 1 and state.direction[0].shape == (D,)
    jac = jax.jacrev(losses2)(params, TRAIN)
    upd, _ = tx.update(jac, state, params, task_losses=losses2(params, TRAIN))
    np.testing.assert_allclose(upd["head"], np.asarray(jac["head"]).sum(0), rtol=1e-6)
    want = np.asarray(state.direction[0]) + np.asarray(state.step_weights) @ np.asarray(jac["enc"])
    np.testing.assert_allclose(upd["enc"], want, rtol=1e-5, atol=1e-6)


def test_jitted_training_descends_checkpoints_and_resumes(tmp_path):
    tx = mtl.balancers.make(
        "forum", num_tasks=K, task_loss_fn=task_losses, inner_lr=ETA, inner_steps=T
    )
    assert tx.spec.kind == "loss"
    step = mtl.training.make_train_step(task_losses, tx, optax.sgd(0.05))

    train = meta_train(tx, step)

    state = step.init(PARAMS)
    start = np.asarray(task_losses(PARAMS, VAL))
    for _ in range(20):
        state, metrics = train(state, TRAIN, VAL)
    assert not metrics["skipped"]
    np.testing.assert_allclose(metrics["weights"], state.balancer_state.weights, rtol=1e-6)
    end = np.asarray(task_losses(state.params, VAL))
    assert end.max() < start.max(), (start, end)  # the worst validation loss went down
    assert_resumes_bit_identically(train, state, TRAIN, VAL, tmp_path / "forum")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 0}, "num_tasks"),
        ({"inner_lr": 0.0}, r"inner_lr must be a finite number in \(0, inf\), got 0.0"),
        ({"meta_lr": float("inf")}, r"meta_lr must be a finite number in \(0, inf\)"),
        ({"inner_steps": 0}, "inner_steps must be a positive int"),
        ({"phi": -0.1}, "phi must be a finite number"),
        ({"ema_power": 0.0}, "ema_power must be a finite number in"),
        ({"decay_every": 0}, "decay_every must be a positive int"),
        ({"normalize": 1}, "normalize must be a bool"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    full = {"num_tasks": K, "inner_lr": ETA, **kwargs}
    with pytest.raises(ValueError, match=match):
        mtl.balancers.forum(task_losses, **full)


def test_state_is_float32_under_x64():
    # (the meta-update casts its result to the incoming state's dtypes)
    with jax.enable_x64(True):
        for name in ("moml", "forum"):
            tx = mtl.balancers.make(name, num_tasks=K, task_loss_fn=task_losses, inner_lr=ETA)
            state = tx.init(PARAMS)
            jac = jax.jacrev(task_losses)(PARAMS, TRAIN)
            _, new = tx.update(jac, state, PARAMS, task_losses=task_losses(PARAMS, TRAIN))
            for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new)):
                assert a.dtype == b.dtype and a.shape == b.shape, name
                assert a.dtype in (jnp.float32, jnp.int32), (name, a.dtype)


def test_meta_optimizer_must_be_an_optax_transform():
    for factory in (mtl.balancers.forum, mtl.balancers.moml):
        with pytest.raises(TypeError, match="meta_optimizer must be an optax"):
            factory(task_losses, num_tasks=K, inner_lr=ETA, meta_optimizer="adam")


def test_pure_function_rejects_bad_inputs():
    with pytest.raises(ValueError, match="phi must be a non-negative number"):
        mtl.weighting.forum_weights(jnp.eye(2), jnp.zeros(2), 1.0, phi=-1.0)
    with pytest.raises(ValueError, match="cross must have shape"):
        mtl.weighting.forum_weights(jnp.eye(2), jnp.zeros(3), 1.0)
    with pytest.raises(ValueError, match="q_sq_norm must be a scalar"):
        mtl.weighting.forum_weights(jnp.eye(2), jnp.zeros(2), jnp.ones(2))


@pytest.mark.parametrize("name", ["forum", "moml", "auto_lambda"])
def test_every_route_gives_the_same_step(name):
    """FORUM's step applies ν s, fixed by the meta-update, plus a stored direction: a
    linear combination of the task gradients whose weights no step gradient changes.
    So the one-backward loss route and the representation route (exact by the chain
    rule) give the Jacobian route's update; here with the representation the whole
    shared part (``shared`` = the encoder) and with every leaf shared. Likewise for
    MOML's softmax(α) and Auto-Lambda's λ."""
    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "training"))
    from step_problem import REPRESENTATION, loss_fn, make_batch, make_params

    enc = lambda path, _: "enc" in jax.tree_util.keystr(path)
    batch, val = make_batch(seed=0), make_batch(seed=1)
    for shared in (enc, None):
        # φ = 1: the constraint is active on this problem, so ν > 0 and the step's
        # weighted part is not zero (with φ = 0.1 here ν = 0)
        extra = {"phi": 1.0} if name == "forum" else {"meta_lr": 0.1}
        tx = mtl.balancers.make(
            name, num_tasks=K, task_loss_fn=loss_fn, inner_lr=0.1, shared=shared, **extra
        )
        params = make_params()
        bstate = jax.jit(tx.meta_update)(tx.init(params), params, batch, val)
        applied = (
            bstate.step_weights if name == "forum" else tx.spec.loss_weights(jnp.ones(K), bstate)[0]
        )
        assert np.all(np.asarray(applied) > 0.05), applied
        if name == "forum":
            assert np.abs(np.asarray(bstate.direction[0])).max() > 0.05
        out = {}
        for mode in ("jacobian", "loss", "representation", "auto"):
            step = mtl.training.make_train_step(
                loss_fn, tx, optax.sgd(0.1), mode=mode, representation=REPRESENTATION
            )
            state = step.init(params)._replace(balancer_state=bstate)
            state, metrics = step(state, batch)
            np.testing.assert_array_equal(metrics["weights"], applied)
            out[mode] = state.params
        moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), out["jacobian"], params)
        assert min(jax.tree_util.tree_leaves(moved)) > 1e-3
        for mode in ("loss", "representation", "auto"):
            for a, b in zip(*(jax.tree_util.tree_leaves(out[m]) for m in (mode, "jacobian"))):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=mode)
    assert tx.spec.kind == "loss"  # auto: the single-backward route
