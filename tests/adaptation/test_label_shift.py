"""Label-shift estimators against NumPy/SciPy references and known fixed points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from mtl_jax import adaptation as ad

K = 4


def _synthetic(rng, n, prior, sharp=2.0):
    """Labels from ``prior`` and noisy probabilities that favour the true class."""
    y = rng.choice(K, size=n, p=prior).astype(np.int32)
    logits = rng.normal(size=(n, K)) + sharp * np.eye(K)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return p.astype(np.float32), y


def _np_confusion(p, y, soft):
    e = p if soft else np.eye(K)[p.argmax(1)]
    c = np.zeros((K, K))
    for i in range(len(y)):
        c[:, y[i]] += e[i]
    return c / len(y)


@pytest.mark.parametrize("soft", [False, True])
def test_bbse_matches_numpy(rng, soft):
    p_s, y_s = _synthetic(rng, 500, np.full(K, 0.25))
    p_t, _ = _synthetic(rng, 400, np.array([0.1, 0.2, 0.3, 0.4]))
    c = _np_confusion(p_s.astype(np.float64), y_s, soft)
    mu = (p_t if soft else np.eye(K)[p_t.argmax(1)]).mean(0)
    np.testing.assert_allclose(ad.confusion_matrix(p_s, y_s, soft=soft), c, atol=1e-6)
    w = ad.bbse(p_s, y_s, p_t, soft=soft)
    np.testing.assert_allclose(w, np.linalg.solve(c, mu), rtol=1e-4, atol=1e-4)
    lam = 1.0 / 400
    w_r = ad.bbse(p_s, y_s, p_t, soft=soft, ridge=lam)
    ref = np.linalg.solve(c.T @ c + lam * np.eye(K), c.T @ mu)
    np.testing.assert_allclose(w_r, ref, rtol=1e-4, atol=1e-4)
    w_j = jax.jit(lambda a, b, c_: ad.bbse(a, b, c_, soft=soft, on_singular="pinv"))(p_s, y_s, p_t)
    np.testing.assert_allclose(w_j, w, rtol=1e-4, atol=1e-4)


def test_bbse_recovers_true_weights_with_many_samples(rng):
    q = np.array([0.05, 0.15, 0.3, 0.5])
    p_s, y_s = _synthetic(rng, 40000, np.full(K, 0.25))
    p_t, _ = _synthetic(rng, 40000, q)
    np.testing.assert_allclose(ad.bbse(p_s, y_s, p_t), q / 0.25, atol=0.08)
    np.testing.assert_allclose(ad.bbse(p_s, y_s, p_t, soft=True), q / 0.25, atol=0.08)


def test_bbse_singular_raises_or_falls_back(rng):
    p_s, y_s = _synthetic(rng, 200, np.full(K, 0.25))
    p_s[:, 3] = -1.0  # class 3 is never predicted: row 3 of C is zero
    p_t, _ = _synthetic(rng, 100, np.full(K, 0.25))
    with pytest.raises(ValueError, match="singular"):
        ad.bbse(p_s, y_s, p_t)
    with pytest.raises(ValueError, match="jit"):
        jax.jit(lambda a, b, c: ad.bbse(a, b, c))(p_s, y_s, p_t)
    w = ad.bbse(p_s, y_s, p_t, on_singular="pinv")
    c = _np_confusion(p_s.astype(np.float64), y_s, False)
    mu = np.eye(K)[p_t.argmax(1)].mean(0)
    np.testing.assert_allclose(w, np.linalg.pinv(c) @ mu, atol=1e-4)
    assert np.all(np.isfinite(ad.bbse(p_s, y_s, p_t, ridge=0.01)))
    with pytest.raises(ValueError, match="ridge"):
        ad.bbse(p_s, y_s, p_t, ridge=-1.0)


def test_rlls_solves_its_convex_program(rng):
    p_s, y_s = _synthetic(rng, 300, np.full(K, 0.25), sharp=1.0)
    p_t, _ = _synthetic(rng, 200, np.array([0.02, 0.08, 0.3, 0.6]), sharp=1.0)
    delta = 0.02
    c = _np_confusion(p_s.astype(np.float64), y_s, False)
    mu = np.eye(K)[p_t.argmax(1)].mean(0)
    b = mu - c.sum(1)
    obj = lambda t: np.linalg.norm(c @ t - b) + delta * np.linalg.norm(t)
    ref = scipy.optimize.minimize(
        obj, np.zeros(K), bounds=[(-1, None)] * K, method="SLSQP", options={"ftol": 1e-12}
    )
    w = np.asarray(ad.rlls(p_s, y_s, p_t, delta=delta))
    assert obj(w - 1) <= ref.fun + 1e-4
    np.testing.assert_allclose(w, ref.x + 1, atol=0.05)
    assert np.all(w >= 0)
    # No regularisation and an invertible C: BBSE clipped at zero.
    w0 = ad.rlls(p_s, y_s, p_t, delta=0.0, num_iters=6000)
    np.testing.assert_allclose(w0, ad.bbse(p_s, y_s, p_t, clip=True), atol=0.05)
    # Heavy regularisation shrinks towards 1.
    assert np.abs(np.asarray(ad.rlls(p_s, y_s, p_t, delta=10.0)) - 1).max() < 0.05
    np.testing.assert_allclose(ad.rlls(p_s, y_s, p_t, lam=0.0), np.ones(K))


def test_mlls_reaches_the_likelihood_maximum(rng):
    prior_s = np.array([0.4, 0.3, 0.2, 0.1])
    p_t, _ = _synthetic(rng, 2000, np.array([0.1, 0.1, 0.3, 0.5]), sharp=1.5)
    w = np.asarray(ad.mlls(p_t, prior_s, tol=1e-10))
    q = w * prior_s
    # Fixed point of the EM map.
    post = p_t * w
    post /= post.sum(1, keepdims=True)
    np.testing.assert_allclose(post.mean(0), q, atol=1e-5)
    # Independent maximiser of the log-likelihood on the simplex (softmax param).
    nll = lambda a: -np.mean(np.log(p_t @ (np.exp(a) / np.exp(a).sum() / prior_s)))
    ref = scipy.optimize.minimize(nll, np.zeros(K), method="BFGS", options={"gtol": 1e-10})
    q_ref = np.exp(ref.x) / np.exp(ref.x).sum()
    np.testing.assert_allclose(q, q_ref, atol=2e-3)
    assert float(ad.mlls_log_likelihood(p_t, prior_s, q)) >= -ref.fun - 1e-5


def test_mlls_exact_posteriors_recover_priors():
    """With exact Bayes posteriors of a two-Gaussian model the MLE is near q."""
    rng = np.random.default_rng(1)
    prior_s, q = np.array([0.5, 0.5]), np.array([0.8, 0.2])
    y = rng.choice(2, size=20000, p=q)
    x = rng.normal(size=20000) + np.where(y == 1, 1.0, -1.0)
    lik = np.stack([scipy.stats.norm.pdf(x, -1), scipy.stats.norm.pdf(x, 1)], 1)
    post = (lik * prior_s) / (lik * prior_s).sum(1, keepdims=True)
    w = ad.mlls(post.astype(np.float32), prior_s)
    np.testing.assert_allclose(np.asarray(w) * prior_s, q, atol=0.02)


def test_bcts_matches_scipy(rng):
    y = rng.integers(0, K, size=600).astype(np.int32)
    z = 3.0 * (rng.normal(size=(600, K)) + 1.5 * np.eye(K)[y]) + np.array([1, 0, 0, -1])
    z = z.astype(np.float32)
    params = ad.bcts_calibrate(z, y)

    def nll(v):
        s = z / np.exp(v[0]) + v[1:]
        s = s - s.max(1, keepdims=True)
        return -np.mean(s[np.arange(600), y] - np.log(np.exp(s).sum(1)))

    ref = scipy.optimize.minimize(nll, np.zeros(K + 1), method="BFGS")
    mine = np.concatenate([[np.log(float(params.temperature))], np.asarray(params.bias)])
    assert nll(mine) <= ref.fun + 1e-4
    np.testing.assert_allclose(np.exp(mine[0]), np.exp(ref.x[0]), rtol=0.02)
    b, b_ref = mine[1:] - mine[1:].mean(), ref.x[1:] - ref.x[1:].mean()
    np.testing.assert_allclose(b, b_ref, atol=0.02)
    probs = ad.apply_bcts(z, params)
    np.testing.assert_allclose(np.asarray(probs).sum(1), 1.0, rtol=1e-5)


def test_importance_weighted_loss_and_reweighting(rng):
    z = rng.normal(size=(50, K)).astype(np.float32)
    y = rng.integers(0, K, size=50).astype(np.int32)
    w = np.array([0.5, 2.0, -1.0, 1.0], np.float32)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    ref = np.mean(np.maximum(w, 0)[y] * -logp[np.arange(50), y])
    np.testing.assert_allclose(ad.importance_weighted_cross_entropy(z, y, w), ref, rtol=1e-5)
    p = np.exp(logp)
    q = np.asarray(ad.reweight_posteriors(p, w))
    ref_q = p * np.maximum(w, 0)
    np.testing.assert_allclose(q, ref_q / ref_q.sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError):
        ad.importance_weighted_cross_entropy(z, y, w[:3])


@pytest.mark.parametrize("test", ["ks", "chi2"])
def test_detection_false_positive_rate_near_level(test):
    rng = np.random.default_rng(2)
    alpha, reps = 0.05, 300
    prior = np.full(K, 0.25)
    rejections = 0
    for _ in range(reps):
        p_s, _ = _synthetic(rng, 200, prior)
        p_t, _ = _synthetic(rng, 200, prior)
        rejections += ad.detect_label_shift(p_s, p_t, test=test, alpha=alpha).shift_detected
    rate = rejections / reps
    # Bonferroni is conservative; χ² is asymptotically exact. 3 binomial SDs above.
    assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps)
    if test == "chi2":
        assert rate >= 0.01


@pytest.mark.parametrize("test", ["ks", "chi2"])
def test_detection_has_power_under_shift(rng, test):
    p_s, _ = _synthetic(rng, 300, np.full(K, 0.25))
    p_t, _ = _synthetic(rng, 300, np.array([0.7, 0.1, 0.1, 0.1]))
    res = ad.detect_label_shift(p_s, p_t, test=test)
    assert res.shift_detected and res.p_value < 1e-4
    if test == "ks":
        raw = [scipy.stats.ks_2samp(p_s[:, c], p_t[:, c]).pvalue for c in range(K)]
        np.testing.assert_allclose(res.p_value, min(1.0, K * min(raw)))
    with pytest.raises(ValueError):
        ad.detect_label_shift(p_s, p_t, alpha=1.5)


def test_shift_sampling(rng):
    q = ad.tweak_one_shift(10, cls=3, rho=0.5)
    assert q[3] == 0.5 and np.isclose(q.sum(), 1)
    d = ad.dirichlet_shift(10, alpha=0.1, seed=rng)
    assert np.isclose(d.sum(), 1) and d.shape == (10,)
    labels = np.repeat(np.arange(10), 20)
    idx = ad.sample_with_label_distribution(labels, q, n=4000, seed=rng)
    freq = np.bincount(labels[idx], minlength=10) / 4000
    np.testing.assert_allclose(freq, q, atol=0.03)
    with pytest.raises(ValueError):
        ad.tweak_one_shift(10, cls=3, rho=1.5)


def test_estimators_jit(rng):
    p_s, y_s = _synthetic(rng, 200, np.full(K, 0.25))
    p_t, _ = _synthetic(rng, 200, np.full(K, 0.25))
    f = jax.jit(lambda a, b, c: ad.rlls(a, b, c, num_iters=50))
    assert f(p_s, y_s, p_t).shape == (K,)
    g = jax.jit(lambda a, b: ad.mlls(a, b))
    assert np.all(np.isfinite(g(p_t, jnp.full(K, 0.25))))


def test_shift_helpers_take_seed_or_generator_and_keyword_hyperparameters():
    labels = np.repeat(np.arange(3), 5)
    a = ad.dirichlet_shift(3, alpha=0.5, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(a, ad.dirichlet_shift(3, alpha=0.5, seed=1))
    idx = ad.sample_with_label_distribution(labels, a, n=20, seed=2)
    gen = np.random.default_rng(2)
    np.testing.assert_array_equal(idx, ad.sample_with_label_distribution(labels, a, n=20, seed=gen))
    with pytest.raises(TypeError, match="positional"):
        ad.dirichlet_shift(3, 0.5)
    with pytest.raises(TypeError, match="positional"):
        ad.tweak_one_shift(3, 1, 0.5)
