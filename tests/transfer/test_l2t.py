"""L2T: MMD statistics vs NumPy loops, base algorithms vs SciPy/scikit-learn, reflection fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from mtl_jax import transfer

SIGMAS = np.array([0.5, 1.0, 2.0, 4.0], np.float32)


def _k(a, b, s):
    return np.exp(-np.sum((a - b) ** 2) / (2 * s * s))


def _proj(w):
    q, _ = np.linalg.qr(np.asarray(w, np.float64))
    return q @ q.T


def test_mmd_statistics_against_numpy_loops(rng):
    xs = rng.normal(size=(13, 3))
    xt = rng.normal(size=(10, 3)) + 0.7
    got = transfer.mmd_statistics(xs.astype(np.float32), xt.astype(np.float32), SIGMAS)
    for m, s in enumerate(SIGMAS.astype(np.float64)):
        kss = np.mean([_k(a, b, s) for a in xs for b in xs])
        ktt = np.mean([_k(a, b, s) for a in xt for b in xt])
        kst = np.mean([_k(a, b, s) for a in xs for b in xt])
        np.testing.assert_allclose(got.d[m], kss + ktt - 2 * kst, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.tau[m], 1 - ktt, rtol=1e-4, atol=1e-6)
    h = np.array(
        [
            [
                _k(xs[2 * i], xs[2 * i + 1], s)
                + _k(xt[2 * i], xt[2 * i + 1], s)
                - _k(xs[2 * i], xt[2 * i + 1], s)
                - _k(xs[2 * i + 1], xt[2 * i], s)
                for i in range(5)
            ]
            for s in SIGMAS.astype(np.float64)
        ]
    )
    np.testing.assert_allclose(got.q, np.cov(h), rtol=1e-3, atol=1e-6)
    same = transfer.mmd_statistics(xs.astype(np.float32), xs.astype(np.float32), SIGMAS)
    np.testing.assert_allclose(same.d, 0.0, atol=1e-5)
    assert np.all(np.asarray(got.d) > 1e-3)
    with pytest.raises(ValueError, match="at least 4"):
        transfer.mmd_statistics(xs[:3], xt, SIGMAS)


def test_pca_and_subspace_alignment_against_sklearn(rng):
    from sklearn.decomposition import PCA

    xs = (rng.normal(size=(60, 6)) * np.arange(1, 7)).astype(np.float32)
    xt = (rng.normal(size=(50, 6)) * np.arange(6, 0, -1)).astype(np.float32)
    got = transfer.pca_map(xs, xt, 3)
    ref = PCA(3).fit(np.concatenate([xs, xt])).components_.T
    np.testing.assert_allclose(_proj(got.source), _proj(ref), atol=1e-4)
    np.testing.assert_array_equal(got.source, got.target)
    sa = transfer.subspace_alignment_map(xs, xt, 2)
    ps, pt = PCA(2).fit(xs).components_.T, PCA(2).fit(xt).components_.T
    np.testing.assert_allclose(_proj(sa.target), _proj(pt), atol=1e-4)
    # P_s P_sᵀ P_t is invariant to the sign of each basis vector in P_s
    np.testing.assert_allclose(
        np.asarray(sa.source) @ np.asarray(sa.target).T, ps @ ps.T @ pt @ pt.T, atol=1e-4
    )


def test_tca_against_scipy_generalised_eigh(rng):
    xs = rng.normal(size=(40, 5)).astype(np.float32)
    xt = (rng.normal(size=(30, 5)) + np.array([2.0, 0, 0, 0, 0])).astype(np.float32)
    mu = 0.5
    got = transfer.tca_map(xs, xt, 2, mu=mu)
    x = np.concatenate([xs, xt]).astype(np.float64)
    n, ns = len(x), len(xs)
    e = np.concatenate([np.full(ns, 1 / ns), np.full(n - ns, -1 / (n - ns))])
    h = np.eye(n) - np.ones((n, n)) / n
    a = x.T @ h @ x
    b = x.T @ np.outer(e, e) @ x + mu * np.eye(5)
    _, vecs = scipy.linalg.eigh(a, b)
    ref = vecs[:, ::-1][:, :2]
    np.testing.assert_allclose(_proj(got.source), _proj(ref), atol=1e-3)
    with pytest.raises(ValueError, match="mu"):
        transfer.tca_map(xs, xt, 2, mu=0.0)
    with pytest.raises(ValueError, match="dim"):
        transfer.tca_map(xs, xt, 6)


def test_ridge_classifier_matches_sklearn_and_transfer_accuracy(rng):
    from sklearn.linear_model import RidgeClassifier

    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.5 * rng.normal(size=(90, 3)), axis=1).astype(np.int32)
    w, b = transfer.ridge_classifier(x, y, 3, ridge=2.0)
    pred = np.argmax(x @ np.asarray(w) + np.asarray(b), axis=1)
    np.testing.assert_array_equal(pred, RidgeClassifier(alpha=2.0).fit(x, y).predict(x))
    eye = transfer.LatentMap(jnp.eye(4), jnp.eye(4))
    acc = transfer.transfer_accuracy(eye, x[:60], y[:60], x[60:66], y[60:66], x[66:], y[66:], 3)
    ref = RidgeClassifier(alpha=1.0).fit(x[:66], y[:66]).score(x[66:], y[66:])
    np.testing.assert_allclose(acc, ref, atol=1e-6)


def test_fit_reflection_recovers_synthetic_function(rng):
    e, k = 80, 3
    d = rng.uniform(0, 1, size=(e, k)).astype(np.float32)
    a = rng.normal(size=(e, k, 4)) * 0.3
    q = (a @ a.transpose(0, 2, 1)).astype(np.float32)
    tau = rng.uniform(0.2, 1.0, size=(e, k)).astype(np.float32)
    stats = transfer.MMDStatistics(d, q, tau)
    true = transfer.ReflectionParams(
        jnp.array([1.0, 0.2, 0.5]), jnp.asarray(0.5), jnp.asarray(0.3), jnp.asarray(0.2)
    )
    inv_l = jax.vmap(transfer.reflection_value, in_axes=(None, 0))(true, stats)
    fitted = transfer.fit_reflection(
        stats, 1.0 / inv_l, reg=0.0, num_iters=3000, learning_rate=0.03
    )
    pred = jax.vmap(transfer.reflection_value, in_axes=(None, 0))(fitted, stats)
    resid = np.mean((np.asarray(pred) - np.asarray(inv_l)) ** 2) / np.var(np.asarray(inv_l))
    assert resid < 1e-2
    assert np.all(np.asarray(fitted.beta) >= 0) and fitted.lam >= 0 and fitted.mu >= 0
    with pytest.raises(ValueError, match="positive"):
        transfer.fit_reflection(stats, -np.ones(e))


def test_optimize_latent_map_decreases_objective(rng):
    xs = rng.normal(size=(40, 6)).astype(np.float32)
    xt = (rng.normal(size=(40, 6)) + np.array([1.5, 0, 0, 0, 0, 0])).astype(np.float32)
    params = transfer.ReflectionParams(
        jnp.array([1.0, 1.0, 1.0, 1.0]), jnp.asarray(0.1), jnp.asarray(0.05), jnp.asarray(0.0)
    )
    init = transfer.pca_map(xs, xt, 2).source
    w, trace = transfer.optimize_latent_map(params, xs, xt, init, SIGMAS, num_iters=150)
    trace = np.asarray(trace)
    assert trace.shape == (151,) and np.all(np.isfinite(trace))
    assert trace[-1] < trace[0] - 1e-3
    # the optimised map reduces the source/target discrepancy
    d0 = transfer.mmd_statistics(xs @ init, xt @ init, SIGMAS).d
    d1 = transfer.mmd_statistics(xs @ w, xt @ w, SIGMAS).d
    assert float(params.beta @ d1) < float(params.beta @ d0)
    w0, t0 = transfer.optimize_latent_map(params, xs, xt, init, SIGMAS, num_iters=0)
    np.testing.assert_array_equal(w0, init)
    assert t0.shape == (1,)
    with pytest.raises(ValueError, match="init"):
        transfer.optimize_latent_map(params, xs, xt, init.T, SIGMAS)
