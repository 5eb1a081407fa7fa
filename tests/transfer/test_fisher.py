"""Diagonal Fisher (true, sampled, empirical) against closed forms and per-example loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import transfer


def _softmax_lp(params, x):
    return jax.nn.log_softmax(x @ params["w"] + params["b"])


def _problem(rng, n=23, d=5, k=3):
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, size=n).astype(np.int32)
    params = {
        "w": rng.normal(size=(d, k)).astype(np.float32),
        "b": rng.normal(size=(k,)).astype(np.float32),
    }
    return x, y, params


def _probs64(x, params):
    logits = x.astype(np.float64) @ params["w"] + params["b"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("chunk_size", [None, 7, 64])
def test_true_fisher_matches_softmax_closed_form(chunk_size, rng):
    x, _, params = _problem(rng)
    got = transfer.fisher_diagonal(_softmax_lp, params, x, chunk_size=chunk_size)
    # The per-example Fisher of the logits is diag(p) − ppᵀ, so the Fisher of
    # (W, b) is (diag(p) − ppᵀ) ⊗ xxᵀ; its diagonal is x_d² p_k (1 − p_k).
    p = _probs64(x, params)
    fw = np.mean(x[:, :, None].astype(np.float64) ** 2 * (p * (1 - p))[:, None, :], axis=0)
    fb = np.mean(p * (1 - p), axis=0)
    np.testing.assert_allclose(got["w"], fw, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got["b"], fb, rtol=1e-4, atol=1e-7)
    # ... and differs from the empirical Fisher at the dataset labels
    emp = transfer.fisher_diagonal(
        _softmax_lp, params, x, kind="empirical", labels=np.zeros(len(x), np.int32)
    )
    assert np.max(np.abs(np.asarray(emp["b"]) - fb)) > 1e-2


class _MLP:
    """A two-layer tanh network, so that the test is not only about linear models."""

    @staticmethod
    def init(rng, d=4, h=6, k=4):
        return {
            "w1": rng.normal(size=(d, h)).astype(np.float32) / 2,
            "w2": rng.normal(size=(h, k)).astype(np.float32),
        }

    @staticmethod
    def log_probs(params, x):
        return jax.nn.log_softmax(jnp.tanh(x @ params["w1"]) @ params["w2"])


def test_true_fisher_matches_per_example_loop(rng):
    params = _MLP.init(rng)
    x = rng.normal(size=(11, 4)).astype(np.float32)
    got = transfer.fisher_diagonal(_MLP.log_probs, params, x, chunk_size=4)
    # per-example, per-class loop: NumPy accumulation of p_k(x) · (∂ log p_k(x) / ∂w)²
    ref = {k: np.zeros(v.shape) for k, v in params.items()}
    for i in range(len(x)):
        p = np.exp(np.asarray(_MLP.log_probs(params, x[i]), np.float64))
        for c in range(len(p)):
            g = jax.grad(lambda w, i=i, c=c: _MLP.log_probs(w, x[i])[c])(params)
            for k in ref:
                ref[k] += p[c] * np.asarray(g[k], np.float64) ** 2 / len(x)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_empirical_fisher_matches_closed_form_and_loop(chunk_size, rng):
    x, y, params = _problem(rng)
    got = transfer.fisher_diagonal(
        _softmax_lp, params, x, kind="empirical", labels=y, chunk_size=chunk_size
    )
    # ∇_W log p(y|x) = x (e_y − p)ᵀ, ∇_b = e_y − p
    r = np.eye(3)[y] - _probs64(x, params)
    np.testing.assert_allclose(
        got["w"], np.mean((x[:, :, None] * r[:, None, :]) ** 2, axis=0), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(got["b"], np.mean(r**2, axis=0), rtol=1e-4, atol=1e-6)
    loop = jax.tree.map(np.zeros_like, params)
    for i in range(len(x)):
        g = jax.grad(lambda w, i=i: _softmax_lp(w, x[i])[y[i]])(params)
        loop = jax.tree.map(lambda a, b: a + np.asarray(b) ** 2 / len(x), loop, g)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, loop)


def test_sampled_fisher_is_unbiased_and_keyed(rng):
    x, _, params = _problem(rng, n=8)
    big = np.tile(x, (500, 1))  # 4000 draws: the Monte Carlo error is a few percent
    true = transfer.fisher_diagonal(_softmax_lp, params, x)
    key = jax.random.key(1)
    s1 = transfer.fisher_diagonal(_softmax_lp, params, big, kind="sampled", key=key)
    s2 = transfer.fisher_diagonal(_softmax_lp, params, big, kind="sampled", key=key, chunk_size=333)
    s3 = transfer.fisher_diagonal(_softmax_lp, params, big, kind="sampled", key=jax.random.key(2))
    np.testing.assert_allclose(s1["b"], true["b"], rtol=0.1)
    np.testing.assert_allclose(s1["w"], true["w"], rtol=0.15, atol=1e-3)
    # the draws depend only on the key and the input's index, not on chunking
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4), s1, s2)
    assert not np.allclose(s1["b"], s3["b"])


def test_fisher_validation():
    lp = lambda w, x: jax.nn.log_softmax(jnp.stack([w * x, -w * x]))
    w, x = jnp.zeros(()), jnp.ones(3)
    with pytest.raises(ValueError, match="chunk_size"):
        transfer.fisher_diagonal(lp, w, x, chunk_size=0)
    with pytest.raises(ValueError, match="leading axis"):
        transfer.fisher_diagonal(lp, w, (jnp.ones(3), jnp.ones(2)))
    with pytest.raises(ValueError, match="kind"):
        transfer.fisher_diagonal(lp, w, x, kind="observed")
    with pytest.raises(ValueError, match="labels"):
        transfer.fisher_diagonal(lp, w, x, kind="empirical")
    with pytest.raises(ValueError, match="labels"):
        transfer.fisher_diagonal(lp, w, x, labels=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="labels"):
        transfer.fisher_diagonal(lp, w, x, kind="empirical", labels=jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="key"):
        transfer.fisher_diagonal(lp, w, x, kind="sampled")
    with pytest.raises(ValueError, match="log-probabilities"):
        transfer.fisher_diagonal(lambda w, x: w * x, w, x)
    with pytest.raises(TypeError, match="log_probs"):
        transfer.fisher_diagonal(None, w, x)
