"""CR-MOGM: the smoothed weights equal torchjd's ``CRMOGMWeighting`` step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

torch = pytest.importorskip("torch")
torchjd = pytest.importorskip("torchjd")


def _jacobians(k=3, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(k, 8))
    return [base + 0.7 * rng.normal(size=(k, 8)) for _ in range(steps)]


@pytest.mark.parametrize(("inner", "alpha"), [("mgda", 0.9), ("mgda", 0.5), ("upgrad", 0.8)])
def test_matches_torchjd_step_by_step(inner, alpha):
    from torchjd.aggregation import CRMOGMWeighting, MGDAWeighting, UPGradWeighting

    if inner == "mgda":
        ref = CRMOGMWeighting(MGDAWeighting(epsilon=1e-12, max_iters=20000), alpha=alpha)
        tx = mtl.balancers.cr_mogm(num_tasks=3, alpha=alpha)
        tol = 1e-4
    else:
        ref = CRMOGMWeighting(UPGradWeighting(), alpha=alpha)
        tx = mtl.balancers.cr_mogm(num_tasks=3, alpha=alpha, base=mtl.balancers.upgrad())
        tol = 2e-4
    state = tx.init(None)
    update = jax.jit(lambda s, j: tx.update({"w": j}, s, task_losses=jnp.ones(3)))
    worst = 0.0
    for j in _jacobians():
        expected = ref(torch.tensor(j @ j.T)).numpy()
        out, state = update(state, jnp.asarray(j, jnp.float32))
        got = np.asarray(mtl.balancers.task_weights(state))
        np.testing.assert_allclose(got, expected, atol=tol)
        np.testing.assert_allclose(out["w"], got @ j, rtol=1e-3, atol=1e-4)
        worst = max(worst, float(np.max(np.abs(got - expected))))
    print(f"[cr_mogm/{inner}] largest |w - torchjd| = {worst:.2e}")


def test_alpha_zero_is_mgda_and_initial_weights_are_used():
    j = _jacobians(steps=1)[0]
    g = jnp.asarray(j @ j.T, jnp.float32)
    tx = mtl.balancers.cr_mogm(num_tasks=3, alpha=0.0)
    w, _ = tx.spec.gram_weights(g, jnp.ones(3), tx.init(None))
    np.testing.assert_allclose(w, mtl.weighting.mgda_weights(g), atol=1e-5)
    lam0 = jnp.array([1.0, 0.0, 0.0])
    tx = mtl.balancers.cr_mogm(num_tasks=3, alpha=0.75, initial_weights=lam0)
    w, _ = tx.spec.gram_weights(g, jnp.ones(3), tx.init(None))
    np.testing.assert_allclose(w, 0.75 * lam0 + 0.25 * mtl.weighting.mgda_weights(g), atol=1e-5)


def test_mgda_over_present_tasks_equals_the_subset_problem():
    rng = np.random.default_rng(5)
    for trial in range(10):
        j = rng.normal(size=(5, 6)) * rng.uniform(0.1, 10.0, size=(5, 1))
        present = rng.uniform(size=5) < 0.6
        present[trial % 5] = True
        g = jnp.asarray(j @ j.T, jnp.float32)
        w = np.asarray(mtl.weighting.mgda_present_weights(g, presence=present))
        sub = j[present]
        ws = np.asarray(mtl.weighting.mgda_weights(jnp.asarray(sub @ sub.T, jnp.float32)))
        np.testing.assert_array_equal(w[~present], 0.0)
        np.testing.assert_allclose(w[present], ws, atol=2e-5, err_msg=str(trial))


def test_absent_task_keeps_its_state_and_present_tasks_match_the_subset_run():
    tx4 = mtl.balancers.cr_mogm(num_tasks=4, alpha=0.6)
    tx3 = mtl.balancers.cr_mogm(num_tasks=3, alpha=0.6)
    s4 = tx4.init(None)
    idx = np.array([0, 1, 3])
    update4 = jax.jit(
        lambda s, j, p: tx4.update({"w": j}, s, task_losses=jnp.ones(4), task_presence=p)
    )
    for step, j in enumerate(_jacobians(k=4, steps=4, seed=2)):
        j = jnp.asarray(j, jnp.float32)
        if step % 2:
            p = jnp.array([True, True, False, True])
            restricted = jax.tree_util.tree_map(lambda x: x[idx] if x.ndim else x, s4)
            out4, new4 = update4(s4, j.at[2].set(jnp.nan), p)
            out3, new3 = tx3.update({"w": j[idx]}, restricted, task_losses=jnp.ones(3))
            np.testing.assert_allclose(out4["w"], out3["w"], rtol=1e-5, atol=1e-6)
            assert new4.weights[2] == 0.0
            assert new4.smoothed[2] == s4.smoothed[2] and new4.task_steps[2] == s4.task_steps[2]
            np.testing.assert_allclose(new4.smoothed[idx], new3.smoothed, rtol=1e-5, atol=1e-6)
            s4 = new4
        else:
            _, s4 = update4(s4, j, jnp.ones(4, bool))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_tasks": 3, "alpha": 1.5}, "alpha"),
        ({"num_tasks": 3, "initial_weights": jnp.ones(2)}, "initial_weights"),
        ({"num_tasks": 3, "base": "mgda"}, "base"),
        ({"num_tasks": 3, "base": mtl.balancers.dwa(num_tasks=3)}, "Gram"),
        ({"alpha": 0.5}, "num_tasks"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mtl.balancers.cr_mogm(**kwargs)
