"""RLW: weights on the simplex, fresh each step, reproducible, distributed as torchjd's Random."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl


def test_update_is_random_convex_combination():
    jac = {"w": jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])}
    tx = mtl.balancers.rlw(num_tasks=2, seed=3)
    state = tx.init(None)
    update = jax.jit(lambda s: tx.update(jac, s, task_losses=jnp.ones(2)))
    seen = []
    for _ in range(3):
        u, state = update(state)
        w = np.asarray(state.weights)
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-6
        np.testing.assert_allclose(u["w"], w @ np.asarray(jac["w"]), rtol=1e-5)
        seen.append(w)
    assert not np.allclose(seen[0], seen[1])
    # Same seed, same sequence.
    state2 = tx.init(None)
    _, state2 = update(state2)
    np.testing.assert_allclose(state2.weights, seen[0])


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet"])
def test_distributions_on_simplex(distribution):
    keys = jax.random.split(jax.random.key(0), 500)
    w = jax.vmap(lambda k: mtl.weighting.rlw_weights(k, num_tasks=4, distribution=distribution))(
        keys
    )
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.mean(0), 0.25, atol=0.03)


def test_normal_matches_torchjd_random_weighting_in_distribution():
    torch = pytest.importorskip("torch")
    agg = pytest.importorskip("torchjd.aggregation")
    torch.manual_seed(0)
    weighting = agg.RandomWeighting()
    m = torch.zeros(5, 3)
    ref = np.stack([weighting(m).numpy() for _ in range(2000)])
    keys = jax.random.split(jax.random.key(1), 2000)
    ours = np.asarray(jax.vmap(lambda k: mtl.weighting.rlw_weights(k, num_tasks=5))(keys))
    # Same law (softmax of a standard normal): compare the mean largest and smallest weight.
    np.testing.assert_allclose(ours.max(1).mean(), ref.max(1).mean(), atol=0.01)
    np.testing.assert_allclose(ours.min(1).mean(), ref.min(1).mean(), atol=0.01)
    np.testing.assert_allclose(ours.std(), ref.std(), atol=0.01)


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="distribution"):
        mtl.balancers.rlw(num_tasks=2, distribution="cauchy")
    with pytest.raises(ValueError, match="num_tasks"):
        mtl.balancers.rlw(num_tasks=0)
