"""Pseudo-task heads: ``D`` decoders per task, their losses and the decoder selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import models as M

K, D, DIM, C, B = 3, 4, 5, 6, 16


def test_invalid_arguments():
    with pytest.raises(ValueError, match="labels"):
        M.pseudo_task_losses(jnp.zeros((2, 3, 4, 5)), jnp.zeros((4, 3), jnp.int32))


def _heads_params(key, k=K, n=D):
    return M.PseudoTaskHeads(k, n, C).init(key, jnp.zeros((2, DIM)))["params"]


def test_heads_shape_and_independent_init(key):
    p = _heads_params(key)
    assert p["kernel"].shape == (K, D, DIM, C) and p["bias"].shape == (K, D, C)
    w = np.asarray(p["kernel"]).reshape(K * D, -1)
    assert len({tuple(np.round(r, 6)) for r in w}) == K * D  # all decoders differ
    z = jax.random.normal(key, (B, DIM))
    y = M.PseudoTaskHeads(K, D, C).apply({"params": p}, z)
    ref = (
        np.einsum("bi,kdif->kdbf", np.asarray(z), np.asarray(p["kernel"]))
        + np.asarray(p["bias"])[:, :, None]
    )
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_losses_layout_is_task_major(key):
    logits = jax.random.normal(key, (K, D, B, C))
    labels = jax.random.randint(jax.random.key(1), (B, K), 0, C)
    losses = M.pseudo_task_losses(logits, labels)
    assert losses.shape == (K * D,)
    lg = np.asarray(logits, np.float64)
    for k in range(K):
        for d in range(D):
            z = lg[k, d]
            logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
            logp -= z.max(-1, keepdims=True)
            ref = -logp[np.arange(B), np.asarray(labels[:, k])].mean()
            np.testing.assert_allclose(losses[k * D + d], ref, rtol=1e-5)


def test_selection_by_validation_score(key):
    scores = jnp.array([[0.1, 0.9, 0.3, 0.9], [0.5, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 0.7]])
    best = M.select_decoders(scores)
    np.testing.assert_array_equal(best, [1, 0, 3])  # ties -> lowest index
    logits = jax.random.normal(key, (K, D, B, C))
    sel = M.selected_logits(logits, best)
    for k in range(K):
        np.testing.assert_array_equal(sel[k], logits[k, int(best[k])])
    labels = jnp.argmax(logits[:, 2], -1).T  # decoder 2 is always right
    acc = M.decoder_accuracy(logits, labels)
    np.testing.assert_array_equal(acc[:, 2], 1.0)
    np.testing.assert_array_equal(M.select_decoders(acc), [2, 2, 2])
