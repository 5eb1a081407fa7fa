"""Task presence: ``mtl.masked_task_losses``, the presence-aware weighting functions
(float64 references and the restriction property), and the builders' fallback for
weight functions that do not take ``presence``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import mtl_jax as mtl
from mtl_jax import weighting as wt

# ----------------------------------------------------------------------------- masked_task_losses


def _reference(ell, mask):
    """NumPy float64 masked means and presence."""
    ell = np.asarray(ell, np.float64)
    mask = np.asarray(mask, bool)
    k = ell.shape[1]
    losses = np.zeros(k)
    for j in range(k):
        if mask[:, j].any():
            losses[j] = ell[mask[:, j], j].mean()
    return losses, mask.any(axis=0)


def test_masked_task_losses_matches_float64_reference(rng):
    ell = rng.gamma(2.0, size=(7, 4))
    mask = rng.random((7, 4)) < 0.5
    mask[:, 2] = False  # task 2 has no labelled example
    mask[0, 0] = True
    with jax.enable_x64(True):
        out = mtl.masked_task_losses(jnp.asarray(ell), jnp.asarray(mask))
        assert isinstance(out, mtl.TaskLosses)
        assert out.losses.dtype == jnp.float64 and out.present.dtype == jnp.bool_
        ref_l, ref_p = _reference(ell, mask)
        np.testing.assert_allclose(out.losses, ref_l, rtol=1e-14)
        np.testing.assert_array_equal(out.present, ref_p)
        assert out.present.tolist() == [True, True, False, True]
        assert float(out.losses[2]) == 0.0


def test_masked_task_losses_does_not_leak_nan_of_unlabelled_examples():
    ell = jnp.array([[1.0, jnp.nan], [3.0, jnp.inf], [jnp.nan, 2.0]])
    mask = jnp.array([[1, 0], [1, 0], [0, 1]])
    out = mtl.masked_task_losses(ell, mask)
    np.testing.assert_array_equal(out.losses, [2.0, 2.0])
    grad = jax.grad(lambda e: jnp.sum(mtl.masked_task_losses(e, mask).losses))(ell)
    np.testing.assert_array_equal(grad, [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])


def test_masked_task_losses_accepts_bool_and_01_masks_and_traces(rng):
    ell = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    mask = rng.random((5, 3)) < 0.6
    a = mtl.masked_task_losses(ell, mask)
    b = mtl.masked_task_losses(ell, mask.astype(np.int32))
    c = jax.jit(mtl.masked_task_losses)(ell, jnp.asarray(mask, jnp.float32))
    for other in (b, c):
        np.testing.assert_array_equal(a.losses, other.losses)
        np.testing.assert_array_equal(a.present, other.present)


def test_masked_task_losses_rejects_bad_inputs():
    ell = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"label_mask.*0 and 1.*2"):
        mtl.masked_task_losses(ell, jnp.array([[1, 0], [2, 1], [0, 0], [1, 1]]))
    with pytest.raises(ValueError, match=r"label_mask.*0 and 1"):
        mtl.masked_task_losses(ell, np.full((4, 2), 0.5))
    with pytest.raises(ValueError, match=r"label_mask must have the shape.*\(2, 4\)"):
        mtl.masked_task_losses(ell, jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"per_example_losses must have shape \[B, K\]"):
        mtl.masked_task_losses(jnp.ones(4), jnp.ones(4, bool))
    with pytest.raises(TypeError, match="per_example_losses must be floating"):
        mtl.masked_task_losses(jnp.ones((4, 2), jnp.int32), jnp.ones((4, 2), bool))


# ----------------------------------------------------------------------------- weighting functions

PRESENCE = np.array([True, False, True, True])
S = np.flatnonzero(PRESENCE)


def _weight_fns(rng):
    """(name, fn(presence) -> [K], fn on the |S| present tasks -> [|S|]) in float64."""
    k = PRESENCE.size
    losses = rng.gamma(2.0, size=k)
    prev, prev2 = rng.gamma(2.0, size=k), rng.gamma(2.0, size=k)
    norms, w = rng.gamma(2.0, size=k), rng.gamma(2.0, size=k)
    l0, s, xi, nadir = rng.gamma(2.0, size=k), rng.normal(size=k), rng.normal(size=k), losses * 1.3
    sub = lambda x: x[S]
    return [
        ("gls", lambda p: wt.gls_weights(losses, presence=p), lambda: wt.gls_weights(sub(losses))),
        (
            "dwa",
            lambda p: wt.dwa_weights(prev, prev2, temperature=2.0, presence=p),
            lambda: wt.dwa_weights(sub(prev), sub(prev2), temperature=2.0),
        ),
        (
            "db_mtl",
            lambda p: wt.db_mtl_weights(norms, losses, presence=p),
            lambda: wt.db_mtl_weights(sub(norms), sub(losses)),
        ),
        (
            "famo_weights",
            lambda p: wt.famo_weights(xi, losses, presence=p),
            lambda: wt.famo_weights(sub(xi), sub(losses)),
        ),
        (
            "famo_logit_grad",
            lambda p: wt.famo_logit_grad(xi, prev, losses, presence=p),
            lambda: wt.famo_logit_grad(sub(xi), sub(prev), sub(losses)),
        ),
        (
            "stch",
            lambda p: wt.stch_weights(losses, nadir=nadir, mu=0.5, presence=p),
            lambda: wt.stch_weights(sub(losses), nadir=sub(nadir), mu=0.5),
        ),
        (
            "uncertainty_weights",
            lambda p: wt.uncertainty_weights(s, presence=p),
            lambda: wt.uncertainty_weights(sub(s)),
        ),
        (
            "uncertainty_grad",
            lambda p: wt.uncertainty_log_variance_grad(s, losses, presence=p),
            lambda: wt.uncertainty_log_variance_grad(sub(s), sub(losses)),
        ),
        (
            "gradnorm_grad",
            lambda p: wt.gradnorm_weights_grad(w, norms, losses, l0, alpha=1.5, presence=p),
            lambda: wt.gradnorm_weights_grad(sub(w), sub(norms), sub(losses), sub(l0), alpha=1.5),
        ),
        (
            "gradnorm_targets",
            lambda p: wt.gradnorm_targets(w, norms, losses, l0, alpha=1.5, presence=p),
            lambda: wt.gradnorm_targets(sub(w), sub(norms), sub(losses), sub(l0), alpha=1.5),
        ),
    ]


def test_weighting_functions_restrict_to_present_tasks(rng):
    """f(x, presence)[S] = f(x[S]) and f(x, presence)[absent] = 0, in float64."""
    with jax.enable_x64(True):
        for name, full, restricted in _weight_fns(rng):
            out = np.asarray(full(jnp.asarray(PRESENCE)))
            assert out.dtype == np.float64, name
            np.testing.assert_allclose(out[S], restricted(), rtol=1e-12, err_msg=name)
            np.testing.assert_array_equal(out[~PRESENCE], 0.0, err_msg=name)
            none = np.asarray(full(jnp.zeros(PRESENCE.size, bool)))
            np.testing.assert_array_equal(none, 0.0, err_msg=f"{name}, all absent")


def test_weighting_functions_match_closed_forms_over_present_tasks(rng):
    """GLS, DWA and STCH against NumPy float64 formulas written over S."""
    k = PRESENCE.size
    losses, prev, prev2 = (rng.gamma(2.0, size=k) for _ in range(3))
    nadir = rng.gamma(2.0, size=k)
    p = jnp.asarray(PRESENCE)
    ls = losses[S]
    gls = np.exp(np.mean(np.log(ls))) / (len(S) * ls)
    r = prev[S] / prev2[S]
    dwa = len(S) * np.exp(r / 2.0) / np.sum(np.exp(r / 2.0))
    u = np.log(ls / nadir[S]) / 0.5
    stch = len(S) * np.exp(u) / np.sum(np.exp(u)) / ls
    with jax.enable_x64(True):
        got = {
            "gls": wt.gls_weights(losses, presence=p),
            "dwa": wt.dwa_weights(prev, prev2, temperature=2.0, presence=p),
            "stch": wt.stch_weights(losses, nadir=nadir, mu=0.5, presence=p),
        }
    for name, ref in (("gls", gls), ("dwa", dwa), ("stch", stch)):
        np.testing.assert_allclose(np.asarray(got[name])[S], ref, rtol=1e-12, err_msg=name)
    s = rng.normal(size=k)
    with jax.enable_x64(True):
        obj = float(wt.uncertainty_objective(s, losses, presence=p))
        none = float(wt.uncertainty_objective(s, losses, presence=jnp.zeros(k, bool)))
    ref = np.sum(0.5 * np.exp(-s[S]) * losses[S] + 0.5 * s[S])
    np.testing.assert_allclose(obj, ref, rtol=1e-12)
    assert none == 0.0


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet"])
def test_rlw_draw_over_present_tasks_has_the_subset_distribution(distribution):
    """RLW's K-task draw restricted to S: zero on the absent task, sums to 1, and its
    first present weight has the distribution of the |S|-task draw's (two-sample KS)."""
    keys = jax.random.split(jax.random.key(3), 4000)
    presence = jnp.array([True, False, True])
    draw_k = jax.vmap(
        lambda key: wt.rlw_weights(key, num_tasks=3, distribution=distribution, presence=presence)
    )(keys)
    draw_s = jax.vmap(lambda key: wt.rlw_weights(key, num_tasks=2, distribution=distribution))(
        jax.random.split(jax.random.key(4), 4000)
    )
    draw_k, draw_s = np.asarray(draw_k), np.asarray(draw_s)
    np.testing.assert_array_equal(draw_k[:, 1], 0.0)
    np.testing.assert_allclose(draw_k.sum(1), 1.0, rtol=1e-6)
    assert scipy.stats.ks_2samp(draw_k[:, 0], draw_s[:, 0]).pvalue > 1e-3
    # Not the same numbers: presence changes the values, not just the support.
    assert not np.allclose(draw_k[:, 0], draw_s[:, 0])


# ----------------------------------------------------------------------------- builders' fallback


def _jac():
    return {"w": jnp.array([[1.0, 2.0], [jnp.nan, 4.0], [0.5, -1.0]])}


def test_weights_function_without_presence_gets_the_zeroing_fallback():
    seen = {}

    def weights_fn(losses, state):  # not presence-aware
        seen["losses"] = losses
        return jnp.array([1.0, 2.0, 3.0]), state

    tx = mtl.balancers.loss_balancer(lambda p: (), weights_fn)
    losses = jnp.array([1.0, jnp.nan, 2.0])
    out, _ = tx.update(_jac(), (), task_losses=losses, task_presence=jnp.array([True, False, True]))
    np.testing.assert_allclose(out["w"], [1.0 + 3 * 0.5, 2.0 - 3.0])
    np.testing.assert_array_equal(seen["losses"], [1.0, 0.0, 2.0])  # NaN loss zeroed


def test_weights_function_with_presence_receives_it():
    got = {}

    def weights_fn(gram, losses, state, presence=None):
        got["presence"], got["gram"] = presence, gram
        return jnp.ones(3), state

    tx = mtl.balancers.gram_balancer(lambda p: (), weights_fn)
    p = jnp.array([True, False, True])
    out, _ = tx.update(_jac(), (), task_losses=jnp.ones(3), task_presence=p)
    np.testing.assert_array_equal(got["presence"], p)
    assert np.all(np.isfinite(got["gram"])) and np.all(np.asarray(got["gram"])[1] == 0)
    np.testing.assert_allclose(out["w"], [1.5, 1.0])


def test_jacobian_balancer_without_presence_sees_zeroed_rows():
    def combine(leaves, losses, state):
        return [x.sum(0) for x in leaves], state

    tx = mtl.balancers.jacobian_balancer(lambda p: (), combine)
    out, _ = tx.update(
        _jac(), (), task_losses=jnp.ones(3), task_presence=jnp.array([True, False, True])
    )
    np.testing.assert_allclose(out["w"], [1.5, 1.0])


# ----------------------------------------------------------------------------- research-code use


def test_partially_labelled_batches_in_a_scanned_training_loop(rng):
    """masked_task_losses + GLS inside lax.scan, presence changing from batch to batch,
    placeholder labels replaced before the loss: every step is finite, the absent
    task's weight is 0, and the weights are the geometric-mean weights over the
    present tasks (NumPy float64 reference)."""
    k, b, d = 3, 8, 4
    x = jnp.asarray(rng.normal(size=(4, b, d)), jnp.float32)
    y = rng.normal(size=(4, b, k))
    mask = rng.random((4, b, k)) < 0.5
    mask[0, :, 1] = False  # batch 0: task 1 absent
    mask[2, :, 0] = False  # batch 2: task 0 absent
    mask[3] = False  # batch 3: nothing labelled
    mask[1, 0] = True
    y[~mask] = np.nan  # placeholder labels
    y, mask = jnp.asarray(y, jnp.float32), jnp.asarray(mask)
    params = {"w": jnp.asarray(rng.normal(size=(d, k)), jnp.float32)}
    tx = optax.chain(mtl.balancers.gls(num_tasks=k), optax.sgd(0.1))

    def per_example(p, xb, yb, mb):
        pred = xb @ p["w"]
        return (pred - jnp.where(mb, yb, 0.0)) ** 2

    def step(carry, batch):
        p, s = carry
        xb, yb, mb = batch
        present = jnp.any(mb, axis=0)
        losses, jac = mtl.value_and_jacobian(
            lambda q: mtl.masked_task_losses(per_example(q, xb, yb, mb), mb).losses
        )(p)
        u, s = tx.update(jac, s, p, task_losses=losses, task_presence=present)
        return (optax.apply_updates(p, u), s), (losses, present, mtl.balancers.task_weights(s), u)

    (_, _), (losses, present, weights, updates) = jax.jit(lambda c, xs: jax.lax.scan(step, c, xs))(
        (params, tx.init(params)), (x, y, mask)
    )
    assert np.all(np.isfinite(updates["w"]))
    np.testing.assert_array_equal(updates["w"][3], 0.0)
    for t in range(4):
        pt = np.asarray(present[t])
        np.testing.assert_array_equal(pt, np.asarray(mask[t]).any(0))
        w = np.asarray(weights[t])
        np.testing.assert_array_equal(w[~pt], 0.0)
        if pt.any():
            ls = np.asarray(losses[t], np.float64)[pt]
            ref = np.exp(np.mean(np.log(ls))) / (pt.sum() * ls)
            np.testing.assert_allclose(w[pt], ref, rtol=1e-5)


def test_spec_callables_take_presence_like_update():
    """The spec's combine (representation mode) and gram_weights (Gramian route) with
    presence= give what update gives with task_presence= (DB-MTL, a Gram balancer)."""
    tx = mtl.balancers.db_mtl(num_tasks=3)
    p = jnp.array([True, False, True])
    losses = jnp.array([1.0, jnp.nan, 2.0])
    jac = _jac()
    out, s1 = tx.update(jac, tx.init(None), task_losses=losses, task_presence=p)
    (combined,), s2 = tx.spec.combine([jac["w"]], losses, tx.init(None), presence=p)
    gram = mtl.gram(jac)  # NaN in the absent row and column
    w, s3 = tx.spec.gram_weights(gram, losses, tx.init(None), presence=p)
    np.testing.assert_allclose(combined, out["w"], rtol=1e-6)
    for s in (s2, s3):
        np.testing.assert_allclose(s.weights, s1.weights, rtol=1e-6)
    np.testing.assert_allclose(w, s1.weights, rtol=1e-6)
    assert float(w[1]) == 0.0 and np.all(np.isfinite(out["w"]))
