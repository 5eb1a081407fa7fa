"""Pseudo-task augmentation: the control strategies and the meta-iteration driver."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import balancers
from mtl_jax import models as M
from mtl_jax import recipes as R
from mtl_jax.training import make_train_step

K, D, DIM, C, B = 3, 4, 5, 6, 16


def _heads_params(key, k=K, n=D):
    return M.PseudoTaskHeads(k, n, C).init(key, jnp.zeros((2, DIM)))["params"]


def test_identical_init_and_greedy_copy(key):
    p = _heads_params(key)
    same = R.pta_identical_init(p)
    for d in range(D):
        np.testing.assert_array_equal(same["kernel"][:, d], p["kernel"][:, 0])
    best = jnp.array([2, 0, 3])
    g = R.pta_greedy_copy(p, best)
    for k in range(K):
        for d in range(D):
            np.testing.assert_array_equal(g["kernel"][k, d], p["kernel"][k, int(best[k])])
            np.testing.assert_array_equal(g["bias"][k, d], p["bias"][k, int(best[k])])


def test_perturbation_has_configured_scale(key):
    big = {"w": jnp.zeros((2, 3, 200, 100))}
    best = jnp.array([1, 2])
    scale = 0.05
    out = R.pta_perturb(big, key, best, scale=scale)["w"]
    for k in range(2):
        for d in range(3):
            x = np.asarray(out[k, d]).ravel()
            if d == int(best[k]):
                np.testing.assert_array_equal(x, 0.0)  # the best one is never perturbed
            else:
                # 20,000 draws: the sample std is within ~1% (5 standard errors) of scale.
                assert abs(x.std() / scale - 1) < 5 / np.sqrt(2 * x.size)
                assert abs(x.mean()) < 5 * scale / np.sqrt(x.size)


def test_update_strategies(key):
    p = _heads_params(key)
    rates = jnp.full((K, D), 0.3)
    scores = jax.random.uniform(key, (K, D))
    best_ref = np.argmax(np.asarray(scores), -1)
    same, r, best = R.pta_update(p, rates, scores, key, strategy="none")
    np.testing.assert_array_equal(best, best_ref)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, same, p))
    g, _, _ = R.pta_update(p, rates, scores, key, strategy="greedy")
    pert, _, _ = R.pta_update(p, rates, scores, key, strategy="perturb", perturbation_scale=0.1)
    for k in range(K):
        b = int(best_ref[k])
        np.testing.assert_array_equal(pert["kernel"][k, b], p["kernel"][k, b])
        for d in range(D):
            np.testing.assert_array_equal(g["kernel"][k, d], p["kernel"][k, b])
            if d != b:
                diff = np.asarray(pert["kernel"][k, d] - g["kernel"][k, d])
                assert 0 < np.abs(diff).max() < 1.0
    _, hr, _ = R.pta_update(
        p, rates, scores, key, strategy="hyperperturb", dropout_scale=0.5, max_dropout=0.6
    )
    for k in range(K):
        b = int(best_ref[k])
        assert float(hr[k, b]) == pytest.approx(0.3)
        others = np.delete(np.asarray(hr[k]), b)
        assert np.all((others >= 0) & (others <= 0.6)) and np.any(others != 0.3)


def test_argument_validation():
    p = {"w": jnp.zeros((2, 3, 4))}
    with pytest.raises(ValueError, match="strategy"):
        R.pta_update(p, jnp.zeros((2, 3)), jnp.zeros((2, 3)), jax.random.key(0), strategy="bad")
    with pytest.raises(ValueError, match="dropout_scale"):
        R.pta_update(p, jnp.zeros((2, 3)), jnp.zeros((2, 3)), jax.random.key(0),
                     strategy="greedy", dropout_scale=-0.1)  # fmt: skip
    with pytest.raises(ValueError, match="scale"):
        R.pta_perturb(p, jax.random.key(0), jnp.zeros(2, jnp.int32), scale=-1.0)
    with pytest.raises(ValueError, match="num_frozen"):
        R.pta_trainable_mask(2, 3, num_frozen=3)
    with pytest.raises(ValueError, match="num_iters"):
        R.make_pta_driver(
            None, None, balancers.equal_weighting(), optax.sgd(0.1),
            num_tasks=1, num_decoders=2, num_iters=0,
        )  # fmt: skip


class _Net(nn.Module):
    k: int
    n: int

    def setup(self):
        self.trunk = nn.Dense(8)
        self.heads = M.PseudoTaskHeads(self.k, self.n, C)

    def __call__(self, x, rates=None, train=False):
        return self.heads(nn.relu(self.trunk(x)), rates, train=train)


def _problem(k, n):
    net = _Net(k, n)
    x = jax.random.normal(jax.random.key(3), (4, B, DIM))  # M = 4 batches
    y = jax.random.randint(jax.random.key(4), (4, B, k), 0, C)
    params = net.init(jax.random.key(5), x[0])

    def loss_fn(p, batch, rates, kk):
        logits = net.apply(p, batch[0], rates, True, rngs={"dropout": kk})
        return M.pseudo_task_losses(logits, batch[1])

    def score_fn(p):
        return M.decoder_accuracy(net.apply(p, x[0]), y[0])

    return net, params, (x, y), loss_fn, score_fn


def test_frozen_decoders_do_not_move():
    net, params, batches, loss_fn, score_fn = _problem(2, 3)
    drv = R.make_pta_driver(
        loss_fn, score_fn, balancers.equal_weighting(), optax.adam(1e-2),
        num_tasks=2, num_decoders=3, num_iters=4, strategy="none", num_frozen=2,
        key_impl="rbg", on_nonfinite="ignore",  # both compile faster on CPU
    )  # fmt: skip
    state, metrics = drv.meta_step(drv.init(params, 0), batches)
    assert metrics["losses"].shape == (4, 6)
    old, new = params["params"]["heads"], state.train.params["params"]["heads"]
    for leaf in ("kernel", "bias"):
        np.testing.assert_array_equal(new[leaf][:, 1:], old[leaf][:, 1:])
        assert not np.allclose(new[leaf][:, 0], old[leaf][:, 0])
    assert not np.allclose(state.train.params["params"]["trunk"]["kernel"],
                           params["params"]["trunk"]["kernel"])  # fmt: skip


def test_driver_greedy_makes_decoders_equal_and_selects():
    net, params, batches, loss_fn, score_fn = _problem(2, 3)
    drv = R.make_pta_driver(
        loss_fn, score_fn, balancers.equal_weighting(), optax.adam(1e-2),
        num_tasks=2, num_decoders=3, num_iters=4, strategy="greedy",
    )  # fmt: skip
    state, metrics = drv.meta_step(drv.init(params, 0), batches)
    np.testing.assert_array_equal(state.best, M.select_decoders(metrics["scores"]))
    h = state.train.params["params"]["heads"]["kernel"]
    for d in range(3):
        np.testing.assert_array_equal(h[:, d], h[:, 0])


@pytest.mark.parametrize("balancer", [balancers.equal_weighting, balancers.mgda])
def test_single_decoder_reduces_to_plain_model(balancer):
    """D = 1 with no control is exactly the plain shared-trunk model with one head per task."""
    net, params, batches, loss_fn, score_fn = _problem(2, 1)
    drv = R.make_pta_driver(
        loss_fn, score_fn, balancer(), optax.sgd(0.1),
        num_tasks=2, num_decoders=1, num_iters=4, strategy="greedy", perturbation_scale=0.5,
        key_impl="rbg", on_nonfinite="ignore",
    )  # fmt: skip
    state, _ = drv.meta_step(drv.init(params, 0), batches)

    # The plain model: Dense trunk + MultiHeadDense, same parameter values.
    plain = nn.Sequential([nn.Dense(8), nn.relu, M.MultiHeadDense(2, C)])
    pp = {
        "params": {
            "layers_0": params["params"]["trunk"],
            "layers_2": {k: v[:, 0] for k, v in params["params"]["heads"].items()},
        }
    }

    def plain_loss(p, batch):
        logits = plain.apply(p, batch[0])  # [K, B, C]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch[1].T)
        return ce.mean(-1)

    step = make_train_step(plain_loss, balancer(), optax.sgd(0.1), on_nonfinite="ignore")
    ts = step.init(pp)
    for m in range(4):
        ts, _ = step(ts, (batches[0][m], batches[1][m]))
    got = state.train.params["params"]
    ref = ts.params["params"]
    np.testing.assert_allclose(
        got["trunk"]["kernel"], ref["layers_0"]["kernel"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        got["heads"]["kernel"][:, 0], ref["layers_2"]["kernel"], rtol=1e-5, atol=1e-6
    )
    # and the logits agree exactly for the same parameters
    x = batches[0][0]
    np.testing.assert_array_equal(net.apply(params, x)[:, 0], plain.apply(pp, x))


def test_perturb_is_hyperperturb_without_dropout_steps(key):
    """P run as "hyperperturb" with zero dropout steps is exactly the "perturb" strategy."""
    p = _heads_params(key)
    rates = jnp.zeros((K, D))
    scores = jax.random.uniform(key, (K, D))
    a, ra, ba = R.pta_update(p, rates, scores, key, strategy="perturb", perturbation_scale=0.1)
    b, rb, bb = R.pta_update(
        p, rates, scores, key, strategy="hyperperturb", perturbation_scale=jnp.float32(0.1)
    )
    np.testing.assert_array_equal(ba, bb)
    np.testing.assert_array_equal(ra, rb)
    for leaf in ("kernel", "bias"):
        np.testing.assert_array_equal(a[leaf], b[leaf])
    # a traced scale is applied and validated only when concrete
    f = jax.jit(lambda s: R.pta_perturb(p, key, bb, scale=s))
    ref = R.pta_perturb(p, key, bb, scale=0.1)["kernel"]
    np.testing.assert_allclose(f(0.1)["kernel"], ref, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="scale"):
        R.pta_perturb(p, key, bb, scale=jnp.float32(-1.0))


def test_driver_overrides_vmap_over_variants_and_key_impl():
    """Per-run overrides in the state: one vmapped driver equals one driver per variant."""
    net, params, batches, loss_fn, score_fn = _problem(2, 3)
    common = dict(num_tasks=2, num_decoders=3, num_iters=4, strategy="hyperperturb")
    variants = [
        dict(perturbation_scale=0.05, dropout_rate=0.0, dropout_scale=0.0),
        dict(perturbation_scale=0.0, dropout_rate=0.3, dropout_scale=0.2),
    ]
    opt = optax.adam(1e-2)
    ew = balancers.equal_weighting()
    drv = R.make_pta_driver(loss_fn, score_fn, ew, opt, **common, key_impl="rbg")
    hyper = {n: jnp.array([v[n] for v in variants]) for n in variants[0]}
    keys = jax.random.key(7, impl="rbg")

    def one(h):
        s = drv.init(params, keys, **h)
        return drv.meta_step(s, batches)[0]

    together = jax.vmap(one)(hyper)
    # the second variant (dropout and its perturbation), built with factory values
    alone = R.make_pta_driver(loss_fn, score_fn, ew, opt, **common, key_impl="rbg", **variants[1])
    ref = alone.meta_step(alone.init(params, keys), batches)[0]
    got = jax.tree_util.tree_map(lambda a: a[1], together)
    np.testing.assert_allclose(got.dropout, ref.dropout, rtol=1e-6)
    assert not np.allclose(got.dropout, 0.3)  # the rates were perturbed
    for leaf in ("kernel", "bias"):
        np.testing.assert_allclose(
            got.train.params["params"]["heads"][leaf],
            ref.train.params["params"]["heads"][leaf],
            rtol=1e-5,
            atol=1e-6,
        )
    np.testing.assert_array_equal(together.dropout[0], 0.0)  # the first variant has none
    assert drv.init(params, 3).key.shape == (4,)  # an int seed makes an rbg key
    with pytest.raises(ValueError, match="seed"):
        drv.init(params, jax.random.key(0))  # a threefry key for an rbg driver
    with pytest.raises(ValueError, match="key_impl"):
        R.make_pta_driver(loss_fn, score_fn, ew, opt, **common, key_impl="nope")
    frozen = drv.init(params, 0, num_frozen=2).trainable
    np.testing.assert_array_equal(frozen, [[True, False, False]] * 2)
