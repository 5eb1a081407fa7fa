"""The ``train`` flag: Dropout and BatchNorm inside experts, towers, stages and heads.

Every architecture passes ``train`` to the user modules that declare it; each
stacked copy draws its own dropout mask and keeps its own BatchNorm statistics;
evaluation is deterministic and needs no dropout key.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

M = mtl.models
K, B, D, W = 2, 8, 5, 4


class DropBN(nn.Module):
    """Dense, BatchNorm, tanh, Dropout: the two layers that depend on ``train``."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(self.features)(jnp.reshape(x, (x.shape[0], -1)))
        h = nn.tanh(nn.BatchNorm(use_running_average=not train, momentum=0.5)(h))
        return nn.Dropout(0.5, deterministic=not train)(h)


def _build(name):
    if name == "hps":
        return M.HardParameterSharing(DropBN(W), num_tasks=K, head_features=2)
    if name == "cross_stitch":
        return M.CrossStitch([DropBN(W), DropBN(2)], num_tasks=K)
    if name == "mmoe":
        return M.MMoE(DropBN(W), DropBN(2), num_tasks=K, num_experts=3, gate_stem=DropBN(3))
    if name == "mtan":
        return M.MTAN([DropBN(W), DropBN(W)], DropBN(2), num_tasks=K)
    if name == "ple":
        return M.PLE(DropBN(W), DropBN(2), num_tasks=K, num_layers=2)
    if name == "dselect_k":
        return M.DSelectK(DropBN(W), DropBN(2), num_tasks=K, num_experts=2, k=1)
    if name == "ltb":
        return M.LTB([DropBN(W), DropBN(W)], DropBN(2), num_tasks=K)
    raise ValueError(name)


def _fwd(model, name, v, x, key, train):
    kw = {"temperature": 1.0} if name == "ltb" else {}
    if not train:
        return model.apply(v, x, **kw), None
    rngs = {"dropout": key}
    if name == "ltb":  # the same tree sample for every dropout key
        rngs["gumbel"] = jax.random.key(7)
    return model.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats"], **kw)


@pytest.mark.parametrize("name", ["hps", "cross_stitch", "mmoe", "mtan", "ple", "dselect_k", "ltb"])
def test_dropout_and_batch_norm_follow_train(name):
    model = _build(name)
    x = jax.random.normal(jax.random.key(1), (B, D))
    v = jax.jit(model.init)(jax.random.key(0), x)
    assert "batch_stats" in v
    train = jax.jit(lambda v, key: _fwd(model, name, v, x, key, True))
    evaluate = jax.jit(lambda v: _fwd(model, name, v, x, None, False)[0])
    a, st_a = train(v, jax.random.key(1))
    b, _ = train(v, jax.random.key(2))
    assert a.shape[:2] == (K, B) and np.all(np.isfinite(a))
    # Different dropout keys, different outputs; the same key, the same output.
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, train(v, jax.random.key(1))[0])
    # Dropout zeroes entries of every copy's output (the towers/heads are DropBN).
    if name != "hps":
        zero = np.mean(np.asarray(a) == 0, axis=(1, 2))
        assert np.all(zero > 0) and np.all(zero < 1), zero
    # Training updates every running statistic (of every copy).
    old, new = jax.tree_util.tree_leaves(v["batch_stats"]), jax.tree_util.tree_leaves(st_a)
    assert all(np.all(o != n) for o, n in zip(old, new))
    # Evaluation: no dropout key, deterministic, and it reads the running statistics.
    e1 = evaluate(v)
    np.testing.assert_array_equal(e1, evaluate(v))
    e2 = evaluate({**v, **st_a})
    assert not np.allclose(e1, e2)


def test_every_copy_draws_its_own_mask_and_keeps_its_own_statistics():
    class Drop(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False)(x)
            self.sow("intermediates", "normalised", x)
            return nn.Dropout(0.5, deterministic=not train)(x)

    s = M._stacking.Stacked(Drop(), 3, in_axis=0)
    x = jax.random.normal(jax.random.key(0), (3, 64, 4)) + jnp.arange(3.0)[:, None, None]
    v = s.init(jax.random.key(0), x)
    y, st = s.apply(
        v, x, train=True, rngs={"dropout": jax.random.key(1)},
        mutable=["batch_stats", "intermediates"],
    )  # fmt: skip
    # Any mutable collection is stacked per copy, not only batch_stats.
    (sown,) = st["intermediates"]["copies"]["module"]["normalised"]
    assert sown.shape == (3, 64, 4)
    kept = np.asarray(y) != 0
    assert not np.array_equal(kept[0], kept[1]) and not np.array_equal(kept[1], kept[2])
    # Copy i normalises x[i] with x[i]'s own statistics (momentum 0.99 from zero).
    mean = st["batch_stats"]["copies"]["module"]["BatchNorm_0"]["mean"]
    np.testing.assert_allclose(mean, 0.01 * np.mean(np.asarray(x), axis=1), rtol=1e-5)


def test_train_is_passed_only_to_modules_that_declare_it():
    takes = M._stacking.takes_train
    assert takes(DropBN(2)) and not takes(nn.Dense(2))
    assert not takes(nn.Sequential([nn.Dense(2), nn.relu]))  # **kwargs does not count
    # An nn.Sequential expert works in training mode.
    model = M.MMoE(nn.Sequential([nn.Dense(3), nn.relu]), nn.Dense(1), num_tasks=2, num_experts=2)
    x = jnp.ones((4, 3))
    v = model.init(jax.random.key(0), x)
    np.testing.assert_array_equal(model.apply(v, x, train=True), model.apply(v, x))


def test_data_parallel_training_forward_matches_one_device():
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    x = jax.random.normal(jax.random.key(1), (B, D))
    for name in ("mmoe", "ple"):
        model = _build(name)
        v = model.init(jax.random.key(0), x)
        fwd = jax.jit(
            lambda v, x, model=model, name=name: _fwd(model, name, v, x, jax.random.key(3), True)
        )
        one, st1 = fwd(v, x)
        xs = jax.device_put(x, sharding)
        four, st4 = fwd(v, xs)
        assert len(xs.sharding.device_set) == 4
        np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), st4, st1
        )


@pytest.mark.parametrize(
    "name, route", [("mmoe", "loss"), ("mmoe", "gramian"), ("ple", "loss"), ("ple", "gramian")]
)
def test_trains_with_dropout_and_batch_norm_through_make_train_step(name, route):
    import optax

    model = _build(name)
    x = jax.random.normal(jax.random.key(1), (B, D))
    y = jax.random.normal(jax.random.key(2), (K, B, 2))
    v = model.init(jax.random.key(0), x)

    def loss_fn(params, batch, *, key, model_state):
        out, new_state = model.apply(
            {"params": params, **model_state}, batch["x"], train=True,
            rngs={"dropout": key}, mutable=["batch_stats"],
        )  # fmt: skip
        return jnp.mean((out - batch["y"]) ** 2, axis=(1, 2)), new_state

    if route == "loss":
        balancer = mtl.balancers.equal_weighting(num_tasks=K)
    else:
        balancer = mtl.balancers.mgda(num_tasks=K, shared=model.shared_mask(v["params"]))
    step = mtl.training.make_train_step(
        loss_fn, balancer, optax.adam(1e-2), mode=route, has_model_state=True
    )
    state = step.init(v["params"], key=3, model_state={"batch_stats": v["batch_stats"]})
    batch = {"x": x, "y": y}
    for t in range(2):
        # The step runs one training-mode forward pass with the step's key fold_in(key, t).
        k_t = jax.random.fold_in(jax.random.key(3), t)
        losses, expected = loss_fn(state.params, batch, key=k_t, model_state=state.model_state)
        new, metrics = step(state, batch)
        np.testing.assert_allclose(metrics["losses"], losses, rtol=1e-5)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
            new.model_state, expected,
        )  # fmt: skip
        state = new
    # Dropout was on (training losses differ from the deterministic evaluation's) and
    # every running statistic moved.
    ev = model.apply({"params": state.params, **state.model_state}, x)
    assert not np.allclose(jnp.mean((ev - y) ** 2, axis=(1, 2)), metrics["losses"])
    for a, b in zip(jax.tree_util.tree_leaves(v["batch_stats"]),
                    jax.tree_util.tree_leaves(state.model_state)):  # fmt: skip
        assert np.all(np.asarray(a) != np.asarray(b))
