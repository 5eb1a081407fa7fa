"""Krum / Multi-Krum and the trimmed mean equal torchjd's ``Krum`` and ``TrimmedMean``."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

torch = pytest.importorskip("torch")
torchjd = pytest.importorskip("torchjd")


@pytest.mark.parametrize(("k", "f", "m"), [(3, 0, 1), (5, 1, 1), (6, 2, 3), (7, 1, 2)])
def test_krum_matches_torchjd(k, f, m):
    from torchjd.aggregation import Krum

    rng = np.random.default_rng(k + 10 * f + 100 * m)
    j = rng.normal(size=(k, 9))
    j[-1] *= 8.0  # an outlier
    ref = Krum(n_byzantine=f, n_selected=m)(torch.tensor(j)).numpy()
    tx = mtl.balancers.krum(n_byzantine=f, n_selected=m, squared=False, num_tasks=k)
    out, state = jax.jit(
        lambda s: tx.update({"w": jnp.asarray(j, jnp.float32)}, s, task_losses=jnp.ones(k))
    )(tx.init(None))
    np.testing.assert_allclose(out["w"], ref, rtol=1e-5, atol=1e-6)
    w = np.asarray(mtl.balancers.task_weights(state))
    assert w[-1] == 0.0 and abs(w.sum() - 1.0) < 1e-6
    with jax.enable_x64(True):
        w64 = mtl.weighting.krum_weights(
            jnp.asarray(j @ j.T), n_byzantine=f, n_selected=m, squared=False
        )
        np.testing.assert_allclose(np.asarray(w64) @ j, ref, rtol=1e-12)


@pytest.mark.parametrize(("k", "b"), [(1, 0), (3, 1), (6, 2), (7, 1)])
def test_trimmed_mean_matches_torchjd(k, b):
    from torchjd.aggregation import TrimmedMean

    rng = np.random.default_rng(k + 10 * b)
    j = rng.normal(size=(k, 11))
    ref = TrimmedMean(trim_number=b)(torch.tensor(j)).numpy()
    tx = mtl.balancers.trimmed_mean(trim_number=b)
    params = {"a": jnp.zeros((5,)), "b": jnp.zeros((2, 3))}
    jac = {
        "a": jnp.asarray(j[:, :5], jnp.float32),
        "b": jnp.asarray(j[:, 5:].reshape(k, 2, 3), jnp.float32),
    }
    out, _ = jax.jit(lambda s: tx.update(jac, s, params, task_losses=jnp.ones(k)))(tx.init(params))
    got = np.concatenate([np.asarray(out["a"]), np.asarray(out["b"]).ravel()])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_krum_squared_score_is_the_papers():
    """The paper's squared-distance score, from a NumPy float64 transcription."""
    rng = np.random.default_rng(7)
    for trial in range(20):
        k, f, m = 7, 2, 2
        j = rng.normal(size=(k, 4)) * rng.uniform(0.2, 3.0, size=(k, 1))
        d2 = ((j[:, None, :] - j[None, :, :]) ** 2).sum(-1)
        scores = [np.sort(np.delete(d2[i], i))[: k - f - 2].sum() for i in range(k)]
        expected = np.zeros(k)
        expected[np.argsort(scores, kind="stable")[:m]] = 1 / m
        got = mtl.weighting.krum_weights(j @ j.T, n_byzantine=f, n_selected=m)
        np.testing.assert_allclose(got, expected, err_msg=str(trial))


def test_presence_equals_the_subset_run():
    rng = np.random.default_rng(3)
    j = rng.normal(size=(6, 5))
    present = np.array([True, False, True, True, False, True])
    sub = j[present]
    g, gs = j @ j.T, sub @ sub.T
    for f, m in [(0, 1), (1, 2)]:
        w = np.asarray(mtl.weighting.krum_weights(g, n_byzantine=f, n_selected=m, presence=present))
        ws = np.asarray(mtl.weighting.krum_weights(gs, n_byzantine=f, n_selected=m))
        np.testing.assert_array_equal(w[~present], 0.0)
        np.testing.assert_allclose(w[present], ws, rtol=1e-6)
    for b in (0, 1, 2):
        got = mtl.weighting.trimmed_mean(j, trim_number=b, presence=present)
        np.testing.assert_allclose(got, mtl.weighting.trimmed_mean(sub, trim_number=b), rtol=1e-6)
    # Too few present tasks: the mean of the present ones; none present: zeros.
    few = np.array([True, True, False, False, False, False])
    np.testing.assert_allclose(
        mtl.weighting.krum_weights(g, n_byzantine=1, presence=few), [0.5, 0.5, 0, 0, 0, 0]
    )
    np.testing.assert_allclose(
        mtl.weighting.trimmed_mean(j, trim_number=1, presence=few), j[:2].mean(0), rtol=1e-6
    )
    none = np.zeros(6, bool)
    np.testing.assert_array_equal(mtl.weighting.krum_weights(g, presence=none), np.zeros(6))
    np.testing.assert_array_equal(mtl.weighting.trimmed_mean(j, presence=none), np.zeros(5))


def test_balancer_passes_presence_through():
    tx = mtl.balancers.trimmed_mean(trim_number=1, num_tasks=4)
    if "presence" not in inspect.signature(tx.spec.combine).parameters:
        pytest.skip("the balancer base does not pass task presence yet")
    rng = np.random.default_rng(4)
    j = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    present = jnp.array([True, True, True, False])
    (out,), state = jax.jit(lambda s, p: tx.spec.combine([j], jnp.ones(4), s, presence=p))(
        tx.init(None), present
    )
    np.testing.assert_allclose(out, np.median(np.asarray(j)[:3], axis=0), rtol=1e-6)
    np.testing.assert_array_equal(state.weights, [1, 1, 1, 0])


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        ("krum", {"n_byzantine": -1}, "n_byzantine"),
        ("krum", {"n_selected": 0}, "n_selected"),
        ("krum", {"n_selected": 4, "num_tasks": 3}, "n_selected=4"),
        ("trimmed_mean", {"trim_number": 1.5}, "trim_number"),
    ],
)
def test_rejects_bad_arguments(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(mtl.balancers, factory)(**kwargs)
