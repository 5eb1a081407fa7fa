"""MoDo and SDMGrad: weights equal torchjd's ``MoDoWeighting`` / ``SDMGradWeighting`` step by step
on the same two-sample matrices ``A = J_1 J_2ᵀ``; objective sampling follows the authors' rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

torch = pytest.importorskip("torch")
torchjd = pytest.importorskip("torchjd")


def _batches(k=3, steps=6, seed=0):
    """Per step: three independent noisy Jacobians of a common mean (z_1, z_2, z_3)."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(k, 8)) * rng.uniform(0.3, 2.0, size=(k, 1))
    return [[mean + 0.5 * rng.normal(size=(k, 8)) for _ in range(3)] for _ in range(steps)]


def _run(tx, ref, k=3, seed=0):
    state = tx.init(None)

    @jax.jit
    def update(state, j1, j2, j3):
        cross = mtl.weighting.task_cross_gram({"w": j1}, {"w": j2})
        return tx.update({"w": j3}, state, task_losses=jnp.ones(k), cross_gram=cross)

    worst = 0.0
    for j1, j2, j3 in _batches(k=k, seed=seed):
        expected = ref(torch.tensor(j1 @ j2.T)).numpy()
        out, state = update(state, *(jnp.asarray(j, jnp.float32) for j in (j1, j2, j3)))
        got = np.asarray(mtl.balancers.task_weights(state))
        np.testing.assert_allclose(got, expected, atol=2e-5)
        np.testing.assert_allclose(out["w"], got @ j3, rtol=1e-4, atol=1e-5)
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


@pytest.mark.parametrize(("gamma", "rho"), [(0.1, 0.1), (0.05, 0.0)])
def test_modo_matches_torchjd(gamma, rho):
    from torchjd.aggregation import MoDoWeighting

    worst = _run(mtl.balancers.modo(num_tasks=3, gamma=gamma, rho=rho), MoDoWeighting(gamma, rho))
    print(f"[modo] largest |w - torchjd| = {worst:.2e}")


@pytest.mark.parametrize("lambda_", [0.3, 2.0])
def test_sdmgrad_matches_torchjd(lambda_):
    from torchjd.aggregation import SDMGradWeighting

    tx = mtl.balancers.sdmgrad(num_tasks=3, lambda_=lambda_)
    worst = _run(tx, SDMGradWeighting(lambda_=lambda_))
    print(f"[sdmgrad λ={lambda_}] largest |w - torchjd| = {worst:.2e}")


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 2.0])
def test_sdmgrad_step_matches_torchjd_in_float64(lambda_):
    """In float64 the inner solve agrees to 1e-9 for every λ. (With λ = 0 and lr = 10 the
    inner momentum-SGD amplifies float32 rounding: float32 runs differ by up to ~1e-2.)"""
    from torchjd.aggregation import SDMGradWeighting

    ref = SDMGradWeighting(lambda_=lambda_)
    worst = 0.0
    with jax.enable_x64(True):
        w = jnp.full((3,), 1 / 3, jnp.float64)
        for j1, j2, _ in _batches():
            a = j1 @ j2.T
            expected = ref(torch.tensor(a)).numpy()
            w, applied = mtl.weighting.sdmgrad_step(w, jnp.asarray(a), lambda_=lambda_)
            worst = max(worst, float(np.max(np.abs(np.asarray(applied) - expected))))
    print(f"[sdmgrad_step float64 λ={lambda_}] largest |w - torchjd| = {worst:.2e}")
    assert worst < 1e-9


def test_without_cross_gram_the_gram_matrix_is_used():
    from torchjd.aggregation import MoDoWeighting

    (j, _, _), *_ = _batches()
    tx = mtl.balancers.modo(num_tasks=3)
    _, state = tx.update({"w": jnp.asarray(j, jnp.float32)}, tx.init(None), task_losses=jnp.ones(3))
    expected = MoDoWeighting()(torch.tensor(j @ j.T)).numpy()
    np.testing.assert_allclose(state.weights, expected, atol=1e-6)
    with pytest.raises(ValueError, match="cross_gram"):
        tx.update(
            {"w": jnp.asarray(j)}, tx.init(None), task_losses=jnp.ones(3), cross_gram=jnp.eye(2)
        )


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_presence_equals_the_subset_run(name):
    tx4 = getattr(mtl.balancers, name)(num_tasks=4)
    tx3 = getattr(mtl.balancers, name)(num_tasks=3)
    idx = np.array([0, 2, 3])
    present = jnp.array([True, False, True, True])
    s4 = tx4.init(None)
    for step, (j1, j2, j3) in enumerate(_batches(k=4, steps=4, seed=3)):
        cross = jnp.asarray(j1 @ j2.T, jnp.float32)
        jac = jnp.asarray(j3, jnp.float32)
        if step % 2 == 0:
            _, s4 = tx4.update({"w": jac}, s4, task_losses=jnp.ones(4), cross_gram=cross)
            continue
        restricted = jax.tree_util.tree_map(lambda x: x[idx] if x.shape == (4,) else x, s4)
        out4, new4 = tx4.update(
            {"w": jac.at[1].set(jnp.nan)},
            s4,
            task_losses=jnp.ones(4),
            task_presence=present,
            cross_gram=cross.at[1].set(jnp.nan),
        )
        out3, new3 = tx3.update(
            {"w": jac[idx]}, restricted, task_losses=jnp.ones(3), cross_gram=cross[idx][:, idx]
        )
        np.testing.assert_allclose(out4["w"], out3["w"], rtol=1e-5, atol=1e-6)
        assert new4.weights[1] == 0.0
        assert new4[0][1] == s4[0][1]  # the absent task's λ / inner w is unchanged
        np.testing.assert_allclose(new4[0][idx], new3[0], rtol=1e-5, atol=1e-7)
        s4 = new4


def test_objective_sampling_follows_the_authors_rule():
    """Each task kept with probability n/K, redrawn when none is; update scaled by K/n."""
    k, n = 6, 2
    tx = mtl.balancers.sdmgrad(num_tasks=k, num_sampled=n, seed=1)
    rng = np.random.default_rng(0)
    j = jnp.asarray(rng.normal(size=(k, 5)), jnp.float32)
    update = jax.jit(lambda s: tx.update({"w": j}, s, task_losses=jnp.ones(k)))
    state = tx.init(None)
    counts = np.zeros(k)
    draws = 300
    reference = jax.jit(lambda w, a: mtl.weighting.sdmgrad_step(w, a)[1])
    for _ in range(draws):
        before = state.inner
        _, state = update(state)
        w = np.asarray(state.weights)
        kept = w != 0
        assert kept.any()
        counts += kept
        # The kept tasks' weights: K/n times SDMGrad's on A with the others' rows zeroed.
        mask = jnp.asarray(kept)
        a = jnp.where(mask[:, None] & mask[None, :], j @ j.T, 0.0)
        applied = np.asarray(reference(before, a))
        np.testing.assert_allclose(w, np.where(kept, k / n * applied, 0.0), rtol=1e-3, atol=1e-5)
    p = n / k
    expected = p / (1 - (1 - p) ** k)  # P(kept | at least one kept)
    np.testing.assert_allclose(counts / draws, expected, atol=0.08)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("modo", {"num_tasks": 3, "gamma": 0.0}, "gamma"),
        ("modo", {"num_tasks": 3, "rho": -1.0}, "rho"),
        ("modo", {"gamma": 0.1}, "num_tasks"),
        ("sdmgrad", {"num_tasks": 3, "momentum": 1.0}, "momentum"),
        ("sdmgrad", {"num_tasks": 3, "num_sampled": 4}, "num_sampled=4"),
        ("sdmgrad", {"num_tasks": 3, "pref_vector": jnp.ones(2)}, "pref_vector"),
        ("sdmgrad", {"num_tasks": 3, "num_iters": 0}, "num_iters"),
    ],
)
def test_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(mtl.balancers, name)(**kwargs)
