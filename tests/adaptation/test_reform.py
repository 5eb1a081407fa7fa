"""REFORM: transport plans against POT and brute force, the refit against scikit-learn."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from sklearn.linear_model import LogisticRegression

from mtl_jax import adaptation as ad


def test_mahalanobis_cost_against_loop(rng):
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    lf = rng.normal(size=(3, 3))
    m = lf @ lf.T
    c = np.asarray(
        ad.mahalanobis_cost(a.astype(np.float32), b.astype(np.float32), m.astype(np.float32))
    )
    ref = np.array([[(a[i] - b[j]) @ m @ (a[i] - b[j]) for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-5)
    c0 = ad.mahalanobis_cost(a.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(c0, ((a[:, None] - b[None]) ** 2).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("uniform", [True, False])
def test_transport_plan_matches_pot(rng, uniform):
    c = rng.uniform(size=(6, 8)).astype(np.float32)
    a = np.full(6, 1 / 6) if uniform else rng.dirichlet(np.ones(6))
    b = np.full(8, 1 / 8) if uniform else rng.dirichlet(np.ones(8))
    plan = ad.semantic_transport(c, epsilon=0.05, a=a, b=b)
    ref = ot.sinkhorn(a, b, c / c.mean(), 0.05, stopThr=1e-12, numItermax=100000)
    np.testing.assert_allclose(plan, ref, atol=2e-5)
    np.testing.assert_allclose(np.asarray(plan).sum(1), a, atol=1e-5)


def test_transport_plan_small_epsilon_is_the_optimal_assignment(rng):
    n = 5
    c = rng.uniform(size=(n, n)).astype(np.float32)
    best = min(itertools.permutations(range(n)), key=lambda p: sum(c[i, p[i]] for i in range(n)))
    perm = np.zeros((n, n))
    perm[np.arange(n), best] = 1.0 / n
    plan = np.asarray(ad.semantic_transport(c, epsilon=2e-3, max_iterations=20000))
    np.testing.assert_allclose(plan, perm, atol=2e-3)
    np.testing.assert_allclose(plan, ot.emd(np.full(n, 1 / n), np.full(n, 1 / n), c), atol=2e-3)


def test_transport_is_differentiable_in_the_metric(rng):
    po = rng.normal(size=(5, 3)).astype(np.float32)
    pn = rng.normal(size=(6, 3)).astype(np.float32)
    r = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)

    def f(lf):
        return jnp.sum(
            ad.semantic_transport(ad.mahalanobis_cost(po, pn, lf @ lf.T), epsilon=0.1) * r
        )

    l0 = jnp.eye(3) + 0.1 * jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
    g = jax.jit(jax.grad(f))(l0)
    fj = jax.jit(f)
    for i, j in [(0, 1), (2, 2), (1, 0)]:
        e = np.zeros((3, 3), np.float32)
        e[i, j] = 1e-2
        fd = (fj(l0 + e) - fj(l0 - e)) / 2e-2
        np.testing.assert_allclose(g[i, j], fd, rtol=2e-2, atol=2e-4)


def test_transform_model_with_a_permutation_plan(rng):
    w = rng.normal(size=(4, 3)).astype(np.float32)
    perm = np.array([2, 0, 3, 1])
    plan = np.zeros((4, 4), np.float32)
    plan[perm, np.arange(4)] = 0.25  # new feature j is old feature perm[j]
    old = ad.LinearModel(jnp.asarray(w), jnp.ones(3))
    new = ad.transform_model(old, plan)
    np.testing.assert_allclose(new.weights, w[perm], rtol=1e-6)
    x_old = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(
        ad.linear_model_predict(new, x_old[:, perm]), ad.linear_model_predict(old, x_old), rtol=1e-5
    )


def test_meta_representations_match_identical_features(rng):
    anchors = rng.normal(size=(20, 3)).astype(np.float32)
    old = np.concatenate([anchors, anchors[:, :1] * 2 + 1], 1)
    new = anchors[:, ::-1].copy()
    c = np.asarray(
        ad.mahalanobis_cost(
            ad.feature_meta_representations(old), ad.feature_meta_representations(new)
        )
    )
    assert c.shape == (4, 3)
    np.testing.assert_allclose([c[0, 2], c[1, 1], c[2, 0], c[3, 2]], 0.0, atol=1e-5)
    assert c[0, 0] > 0.5


def test_refit_from_scratch_matches_sklearn(rng):
    n, d, k, lam = 60, 5, 3, 0.05
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, size=n).astype(np.int32)
    model, _ = ad.reform_refit(x, y, None, num_classes=k, lam=lam, num_iters=200)
    sk = LogisticRegression(C=1.0 / (2 * lam * n), tol=1e-10, max_iter=10000).fit(x, y)
    w = np.asarray(model.weights)
    # Softmax parameters are identifiable up to a shift across classes.
    np.testing.assert_allclose(w - w.mean(1, keepdims=True), sk.coef_.T, atol=2e-3)


def test_refit_biased_regulariser(rng):
    n, d, k = 30, 4, 2
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, size=n).astype(np.int32)
    prior = ad.LinearModel(jnp.asarray(rng.normal(size=(d, k)), jnp.float32), jnp.zeros(k))
    strong, d_fixed = ad.reform_refit(x, y, prior, num_classes=k, lam=1e4, learn_scale=False)
    np.testing.assert_allclose(strong.weights, prior.weights, atol=1e-3)
    assert float(d_fixed) == 1.0
    # With the scale learned, (W, d) is a stationary point of the objective.
    model, scale = ad.reform_refit(x, y, prior, num_classes=k, lam=0.1, num_iters=200)

    def obj(w, b, s):
        logits = x @ w + b[None, :]
        ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(n), y])
        return ce + 0.1 * jnp.sum((w - s * prior.weights) ** 2)

    grads = jax.grad(obj, argnums=(0, 1, 2))(model.weights, model.bias, scale)
    assert max(float(jnp.max(jnp.abs(g))) for g in grads) < 1e-4
    with pytest.raises(ValueError):
        ad.reform_refit(x, y, prior, num_classes=k, lam=0.0)


def test_learned_metric_suppresses_nuisance_dimensions(rng):
    """Meta-representations with 2 informative and 2 noisy dims: learning M through
    the transport lowers the transported model's loss below the Euclidean metric's."""
    d0, d1, k = 8, 8, 2
    informative = rng.normal(size=(d0, 2))
    perm = rng.permutation(d0)
    phi_old = np.concatenate([informative, 3 * rng.normal(size=(d0, 2))], 1).astype(np.float32)
    phi_new = np.concatenate([informative[perm], 3 * rng.normal(size=(d1, 2))], 1).astype(
        np.float32
    )
    w = rng.normal(size=(d0, k)).astype(np.float32)
    old = ad.LinearModel(jnp.asarray(3 * w), jnp.zeros(k))
    x_old = rng.normal(size=(200, d0)).astype(np.float32)
    y = np.asarray(jnp.argmax(ad.linear_model_predict(old, x_old), -1), np.int32)
    x_new = x_old[:, perm]

    def loss(metric):
        plan = ad.semantic_transport(ad.mahalanobis_cost(phi_old, phi_new, metric), epsilon=0.05)
        logits = ad.linear_model_predict(ad.transform_model(old, plan), x_new)
        return float(-jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(200), y]))

    def matched_mass(metric):  # mass on the true correspondences, 1 for a perfect plan
        plan = ad.semantic_transport(ad.mahalanobis_cost(phi_old, phi_new, metric), epsilon=0.05)
        return float(d1 * jnp.sum(plan[perm, jnp.arange(d1)]))

    metric = ad.learn_metric(phi_old, phi_new, old, x_new, y, num_iters=30, learning_rate=0.1)
    assert loss(metric) < 0.5 * loss(jnp.eye(4))
    assert matched_mass(metric) > matched_mass(jnp.eye(4)) + 0.1
