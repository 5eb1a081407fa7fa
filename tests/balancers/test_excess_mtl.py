"""ExcessMTL: weights equal torchjd's ``ExcessMTLWeighting`` step by step (with and without
warm-up); presence leaves an absent task's state alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

torch = pytest.importorskip("torch")
torchjd = pytest.importorskip("torchjd")

PARAMS = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}


def _jac(rows):
    rows = jnp.asarray(rows, jnp.float32)
    k = rows.shape[0]
    return {"a": rows[:, :3], "b": rows[:, 3:].reshape(k, 2, 2)}


def _sequence(k=3, steps=7, seed=0):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.2, 3.0, size=(k, 1))
    return [rng.normal(size=(k, 7)) * scale * (0.9**t) for t in range(steps)]


@pytest.mark.parametrize(("step_size", "warmup"), [(1.0, 0), (0.5, 3)])
def test_matches_torchjd(step_size, warmup):
    from torchjd.aggregation import ExcessMTLWeighting

    ref = ExcessMTLWeighting(robust_step_size=step_size, n_warmup_steps=warmup)
    tx = mtl.balancers.excess_mtl(num_tasks=3, step_size=step_size, warmup_steps=warmup)
    state = tx.init(PARAMS)
    update = jax.jit(lambda s, j: tx.update(j, s, PARAMS, task_losses=jnp.ones(3)))
    worst = 0.0
    for rows in _sequence():
        expected = ref(torch.tensor(rows)).numpy()
        out, state = update(state, _jac(rows))
        got = np.asarray(mtl.balancers.task_weights(state))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        flat = np.concatenate([np.asarray(out["a"]), np.asarray(out["b"]).ravel()])
        np.testing.assert_allclose(flat, got @ rows, rtol=1e-4, atol=1e-5)
        worst = max(worst, float(np.max(np.abs(got - expected))))
    print(f"[excess_mtl η={step_size} W={warmup}] largest |w - torchjd| = {worst:.2e}")


def test_risk_estimate_is_the_preconditioned_norm():
    rng = np.random.default_rng(1)
    g1, g2 = rng.normal(size=(2, 3, 4))
    e1, sums = mtl.weighting.excess_mtl_risks([jnp.asarray(g1)], [jnp.zeros((3, 4))])
    e2, _ = mtl.weighting.excess_mtl_risks([jnp.asarray(g2)], sums)
    np.testing.assert_allclose(e1, (g1**2 / np.sqrt(g1**2 + 1e-7)).sum(1), rtol=1e-5)
    np.testing.assert_allclose(e2, (g2**2 / np.sqrt(g1**2 + g2**2 + 1e-7)).sum(1), rtol=1e-5)


def test_absent_task_keeps_its_state_and_present_tasks_match_the_subset_run():
    tx4 = mtl.balancers.excess_mtl(num_tasks=4, warmup_steps=1)
    tx3 = mtl.balancers.excess_mtl(num_tasks=3, warmup_steps=1)
    idx = np.array([0, 1, 3])
    present = jnp.array([True, True, False, True])
    s4 = tx4.init(PARAMS)
    update4 = jax.jit(
        lambda s, j, p: tx4.update(j, s, PARAMS, task_losses=jnp.ones(4), task_presence=p)
    )
    for step, rows in enumerate(_sequence(k=4, steps=5, seed=2)):
        if step == 0:
            _, s4 = update4(s4, _jac(rows), jnp.ones(4, bool))
            continue
        restricted = jax.tree_util.tree_map(
            lambda x: x[idx] if x.ndim and x.shape[0] == 4 else x, s4
        )
        bad = np.array(rows)
        bad[2] = np.nan
        out4, new4 = update4(s4, _jac(bad), present)
        out3, new3 = tx3.update(_jac(rows[idx]), restricted, PARAMS, task_losses=jnp.ones(3))
        for a, b in zip(jax.tree_util.tree_leaves(out4), jax.tree_util.tree_leaves(out3)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert new4.weights[2] == 0.0
        for new, old in zip(jax.tree_util.tree_leaves(new4), jax.tree_util.tree_leaves(s4)):
            if new.ndim and new.shape[0] == 4 and new is not new4.weights:
                np.testing.assert_array_equal(np.asarray(new)[2], np.asarray(old)[2])
        np.testing.assert_allclose(new4.weights[idx], new3.weights, rtol=1e-5, atol=1e-7)
        s4 = new4


def test_rejects_bad_arguments_and_mismatched_state():
    with pytest.raises(ValueError, match="step_size"):
        mtl.balancers.excess_mtl(num_tasks=2, step_size=0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        mtl.balancers.excess_mtl(num_tasks=2, warmup_steps=-1)
    with pytest.raises(ValueError, match="num_tasks"):
        mtl.balancers.excess_mtl()
    tx = mtl.balancers.excess_mtl(num_tasks=3)
    with pytest.raises(ValueError, match="params"):
        tx.init(None)
    with pytest.raises(ValueError, match="state does not match"):
        tx.update({"w": jnp.ones((3, 5))}, tx.init(PARAMS), task_losses=jnp.ones(3))
