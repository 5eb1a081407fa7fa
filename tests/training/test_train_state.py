"""``TrainState.key`` and ``TrainState.model_state``: per-step keys, BatchNorm statistics.

A tiny Flax linen model with Dropout and BatchNorm trains through every
gradient route; the statistics come from the step's one forward pass, a skipped
step leaves them alone, and a checkpointed run resumes bit-identically.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

K = 2


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dense(8)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
        h = nn.Dropout(0.3, deterministic=not train)(nn.relu(h))
        return nn.Dense(K)(h)


NET = Net()


def loss_fn(params, batch, *, key, model_state):
    pred, upd = NET.apply(
        {"params": params, **model_state},
        batch["x"],
        train=True,
        rngs={"dropout": key},
        mutable=["batch_stats"],
    )
    return jnp.mean((pred - batch["y"]) ** 2, axis=0), upd


def _batch(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return {
        "x": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
        "y": jnp.asarray(rng.normal(size=(n, K)), jnp.float32),
    }


def _variables():
    return NET.init(jax.random.key(0), jnp.zeros((1, 4)), train=False)


ROUTES = {
    "loss": (mtl.balancers.equal_weighting, "loss"),
    "gramian": (mtl.balancers.mgda, "gramian"),
    "jacobian": (mtl.balancers.mgda, "jacobian"),
}


def _build(route, **kw):
    make, mode = ROUTES[route]
    return mtl.training.make_train_step(
        loss_fn, make(), optax.sgd(0.05), mode=mode, has_model_state=True, **kw
    )


def _init(ts, seed=0):
    v = _variables()
    return ts.init(v["params"], key=seed, model_state={"batch_stats": v["batch_stats"]})


@pytest.mark.parametrize("route", list(ROUTES))
def test_model_state_comes_from_the_one_forward_pass(route):
    ts = _build(route)
    state = _init(ts, seed=5)
    for t, b in enumerate([_batch(0), _batch(1)]):
        k_t = jax.random.fold_in(jax.random.key(5), t)
        _, expected = loss_fn(state.params, b, key=k_t, model_state=state.model_state)
        new, metrics = ts(state, b)
        # One update from the pre-step params' forward pass with k_t, not K of them.
        for x, y in zip(jax.tree.leaves(new.model_state), jax.tree.leaves(expected)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
        assert bool(metrics["finite"])
        np.testing.assert_array_equal(new.key, state.key)  # the run's key never changes
        state = new
    assert not np.allclose(
        state.model_state["batch_stats"]["BatchNorm_0"]["mean"],
        _variables()["batch_stats"]["BatchNorm_0"]["mean"],
    )


def test_nonfinite_batch_leaves_model_state_and_params_untouched():
    ts = _build("gramian")
    state, _ = ts(_init(ts), _batch(0))
    bad = _batch(1)
    bad["x"] = bad["x"].at[3, 0].set(jnp.nan)  # one NaN: every BatchNorm mean is NaN
    new, metrics = ts(state, bad)
    assert not bool(metrics["finite"]) and int(new.skipped) == 1
    for x, y in zip(jax.tree.leaves(new.model_state), jax.tree.leaves(state.model_state)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(x, y)


def test_a_key_taking_loss_gets_fold_in_of_the_step():
    seen = []

    def loss(p, b, key):
        seen.append(None)
        return jnp.stack([jnp.sum(p["w"] ** 2), jnp.sum(p["w"])]), jax.random.key_data(key)

    ts = mtl.training.make_train_step(
        loss, mtl.balancers.equal_weighting(), optax.sgd(0.1), has_aux=True
    )
    state = ts.init({"w": jnp.ones(3)}, key=jax.random.key(11))
    got = []
    for _ in range(3):
        state, m = ts(state, jnp.zeros(2))
        got.append(np.asarray(m["aux"]))
    want = [jax.random.key_data(jax.random.fold_in(jax.random.key(11), t)) for t in range(3)]
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    assert len({tuple(g) for g in got}) == 3
    np.testing.assert_array_equal(state.key, jax.random.key_data(jax.random.key(11)))
    # int seed, typed key and raw key data name the same key; None is seed 0
    same = [ts.init({"w": jnp.ones(3)}, key=k).key for k in (11, jax.random.PRNGKey(11))]
    for k in same:
        np.testing.assert_array_equal(k, state.key)
    np.testing.assert_array_equal(
        ts.init({"w": jnp.ones(3)}).key, ts.init({"w": jnp.ones(3)}, key=0).key
    )


def test_loss_takes_key_override_and_keyless_loss():
    def loss(p, b, key=None):
        assert key is None
        return jnp.stack([jnp.sum(p["w"] ** 2), jnp.sum(p["w"])])

    ts = mtl.training.make_train_step(
        loss, mtl.balancers.equal_weighting(), optax.sgd(0.1), loss_takes_key=False
    )
    ts(ts.init({"w": jnp.ones(3)}), jnp.zeros(2))
    # An old hand-built 5-field state still trains a loss without a key.
    plain = lambda p, b: jnp.stack([jnp.sum(p["w"] ** 2), jnp.sum(p["w"])])
    ts = mtl.training.make_train_step(plain, mtl.balancers.mgda(), optax.sgd(0.1))
    p = {"w": jnp.ones(3)}
    bal = mtl.balancers.mgda()
    old = mtl.training.TrainState(
        p, bal.init(p), optax.sgd(0.1).init(p), jnp.zeros((), jnp.int32), None
    )
    new, _ = ts(old, jnp.zeros(2))
    assert int(new.step) == 1 and new.key is None and new.model_state is None


def test_checkpoint_resume_replays_keys_and_statistics(tmp_path):
    ts = _build("gramian")
    batches = [_batch(s) for s in range(4)]
    straight = _init(ts, seed=3)
    for b in batches:
        straight, _ = ts(straight, b)

    state = _init(ts, seed=3)
    for b in batches[:2]:
        state, _ = ts(state, b)
    with mtl.training.Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(2, state)
        restored, _ = ckpt.restore_latest(_init(ts, seed=99))
    assert isinstance(restored, mtl.training.TrainState)
    np.testing.assert_array_equal(restored.key, state.key)
    for b in batches[2:]:
        restored, _ = ts(restored, b)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_model_state_is_replicated_on_a_mesh():
    # Auto axes: Flax's Dropout (lax.select of an unsharded mask) rejects Explicit ones.
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    single, parallel = _build("jacobian"), _build("jacobian", mesh=mesh)
    a, b = _init(single), _init(parallel)
    for x in jax.tree.leaves((b.model_state, b.key)):
        assert x.sharding.is_fully_replicated and len(x.sharding.device_set) == 4
    batch = _batch(0)
    a, _ = single(a, batch)
    b, _ = parallel(b, mtl.training.shard_batch(batch, mesh))
    for x in jax.tree.leaves(b.model_state):
        assert x.sharding.is_fully_replicated
    for x, y in zip(jax.tree.leaves(a.model_state), jax.tree.leaves(b.model_state)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_model_state_errors_say_what_to_do():
    ts = _build("loss")
    v = _variables()
    with pytest.raises(ValueError, match="init got no model_state"):
        ts.init(v["params"])
    plain = mtl.training.make_train_step(
        lambda p, b: jnp.stack([jnp.sum(p["w"])]), mtl.balancers.equal_weighting(), optax.sgd(1)
    )
    with pytest.raises(ValueError, match="has_model_state=True"):
        plain.init({"w": jnp.ones(2)}, model_state={"batch_stats": {}})

    def wrong_arity(params, batch, *, key, model_state):
        return loss_fn(params, batch, key=key, model_state=model_state)[0]

    ts = mtl.training.make_train_step(
        wrong_arity, mtl.balancers.equal_weighting(), optax.sgd(1), has_model_state=True
    )
    with pytest.raises(TypeError, match=r"\(losses, new_model_state\)"):
        ts(_init(ts), _batch())


def test_model_state_with_representation_is_refused():
    rep = mtl.training.Representation(lambda p, b: b, lambda p, z, b: jnp.stack([jnp.sum(z)]))
    with pytest.raises(ValueError, match="has_model_state=True does not combine"):
        mtl.training.make_train_step(
            loss_fn, mtl.balancers.mgda(), optax.sgd(1), representation=rep, has_model_state=True
        )


def test_integer_params_name_the_leaf():
    ts = mtl.training.make_train_step(
        lambda p, b: jnp.stack([jnp.sum(p["w"]), jnp.sum(p["n"])]),
        mtl.balancers.equal_weighting(),
        optax.sgd(1),
    )
    with pytest.raises(ValueError, match=r"params leaf \['n'\] has dtype int32"):
        ts.init({"w": jnp.ones(2), "n": jnp.arange(2)})


def test_raise_policy_inside_user_jit_names_the_alternative():
    ts = mtl.training.make_train_step(
        lambda p, b: jnp.stack([jnp.sum(p["w"] * b)]),
        mtl.balancers.equal_weighting(),
        optax.sgd(1),
        on_nonfinite="raise",
    )
    state = ts.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"on_nonfinite='skip'.*metrics\['finite'\]"):
        jax.jit(lambda s, b: ts(s, b))(state, jnp.ones(2))
