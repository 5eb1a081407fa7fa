"""The hard-parameter-sharing model and the benchmark networks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl


def _count(tree):
    return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def test_benchmark_parameter_counts():
    # Shapes only (eval_shape): nothing to compile.
    w1 = mtl.models.conv_hps(4)
    p1 = jax.eval_shape(w1.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert _count(p1["encoder"]) == 109_760  # benchmarks/PEERS.md, workload W1
    assert p1["heads"]["kernel"].shape == (4, 128, 1)
    w2 = mtl.models.mlp_hps(10)
    p2 = jax.eval_shape(w2.init, jax.random.key(0), jnp.zeros((1, 250)))["params"]
    assert _count(p2["encoder"]) == 55_400  # benchmarks/PEERS.md, workload W2
    assert p2["heads"]["kernel"].shape == (10, 100, 100)


def test_encode_decode_and_independent_heads():
    model = mtl.models.mlp_hps(3, hidden=6, out=2)
    x = jax.random.normal(jax.random.key(1), (5, 7))
    variables = model.init(jax.random.key(0), x)
    out = model.apply(variables, x)
    z = model.apply(variables, x, method="encode")
    assert out.shape == (3, 5, 2) and z.shape == (5, 6)
    np.testing.assert_allclose(model.apply(variables, z, method="decode"), out, rtol=1e-6)
    heads = variables["params"]["heads"]
    manual = jnp.einsum("nd,kdf->knf", z, heads["kernel"]) + heads["bias"][:, None, :]
    np.testing.assert_allclose(out, manual, rtol=1e-5, atol=1e-6)
    # Heads are initialised independently.
    assert not np.allclose(heads["kernel"][0], heads["kernel"][1])
    # Task k's output does not depend on head j != k.
    g = jax.grad(lambda p: jnp.sum(model.apply(p, x)[0]))(variables)
    assert np.all(g["params"]["heads"]["kernel"][1:] == 0)
    mask = mtl.models.HardParameterSharing.shared_mask(variables)
    assert mask["params"]["encoder"]["Dense_0"]["kernel"] is True
    assert mask["params"]["heads"]["kernel"] is False


def test_toy_regression_data():
    d = mtl.data.toy_regression(4, num_train=20, num_test=5, seed=3)
    assert d.x_train.shape == (20, 250) and d.y_train.shape == (4, 20, 100)
    assert d.y_test.shape == (4, 5, 100)
    np.testing.assert_allclose(d.sigmas, np.linspace(1, 100, 4), rtol=1e-6)
    # |y_k| <= σ_k, and tasks are scaled copies up to their own ε_k.
    assert np.all(np.abs(d.y_train) <= d.sigmas[:, None, None] + 1e-4)
    again = mtl.data.toy_regression(4, num_train=20, num_test=5, seed=3)
    np.testing.assert_array_equal(d.x_train, again.x_train)


def test_decode_tasks_reads_one_copy_per_task():
    k, d = 3, 5
    model = mtl.models.HardParameterSharing(nn.Dense(d), num_tasks=k, head_features=2)
    x = jax.random.normal(jax.random.key(0), (4, 7))
    params = model.init(jax.random.key(1), x)["params"]
    z = model.apply({"params": params}, x, method="encode")
    zs = jnp.broadcast_to(z, (k, *z.shape))
    same = model.apply({"params": params}, zs, method="decode_tasks")
    np.testing.assert_allclose(same, model.apply({"params": params}, z, method="decode"), rtol=1e-6)
    # Head k sees only zs[k]: changing zs[1] changes output 1 and nothing else.
    bumped = model.apply({"params": params}, zs.at[1].add(1.0), method="decode_tasks")
    np.testing.assert_array_equal(np.asarray(bumped)[[0, 2]], np.asarray(same)[[0, 2]])
    assert not np.allclose(bumped[1], same[1])
    with pytest.raises(ValueError, match="per_task"):
        model.apply({"params": params}, z, method="decode_tasks")


def test_decode_tasks_gives_the_representation_route_its_gradients():
    k = 3
    model = mtl.models.HardParameterSharing(nn.Dense(6), num_tasks=k, head_features=1)
    x = jax.random.normal(jax.random.key(0), (8, 4))
    y = jax.random.normal(jax.random.key(1), (k, 8, 1))
    params = model.init(jax.random.key(2), x)["params"]

    def enc(p, b):
        return model.apply({"params": p}, b[0], method="encode")

    def dec(p, z, b):
        return jnp.mean((model.apply({"params": p}, z, method="decode") - b[1]) ** 2, axis=(1, 2))

    def dec_tasks(p, zs, b):
        out = model.apply({"params": p}, zs, method="decode_tasks")
        return jnp.mean((out - b[1]) ** 2, axis=(1, 2))

    def loss_fn(p, b):
        return dec(p, enc(p, b), b)

    outs = []
    for rep in (
        mtl.training.Representation(enc, dec),
        mtl.training.Representation(enc, dec, decode_tasks=dec_tasks),
    ):
        step = mtl.training.make_train_step(
            loss_fn,
            mtl.balancers.mgda(shared="encoder", num_tasks=k),
            optax.sgd(0.1),
            mode="representation",
            representation=rep,
        )
        outs.append(step(step.init(params), (x, y))[0].params)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *outs
    )
