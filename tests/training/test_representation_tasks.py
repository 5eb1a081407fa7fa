"""Representation mode with ``Representation.decode_tasks``: one backward pass through
the heads gives the per-task gradients w.r.t. ``z``, equal to the ``K``-VJP route."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import step_problem as sp


def decode_tasks(p, zs, b):
    """``sp.decode`` with one copy of ``z`` per task (its heads are separable)."""
    pred = jnp.einsum("kbd,kd->bk", zs, p["heads"]["w"]) + p["heads"]["b"][None, :]
    losses = jnp.mean((pred - b["y"]) ** 2, axis=0) + jnp.mean(b["loss_poison"], axis=0)
    v = jnp.mean(b["grad_poison"], axis=0)
    poison = jnp.stack([sp._poison(p["heads"]["w"], v[k]) for k in range(sp.K)])
    return losses + poison


def mixed_decode(p, z, b):
    """Not separable: loss ``k`` reads heads ``k`` and ``k + 1``."""
    pred = z @ p["heads"]["w"].T + p["heads"]["b"][None, :]
    mixed = pred + 0.5 * jnp.roll(pred, -1, axis=1)
    return jnp.mean((mixed - b["y"]) ** 2, axis=0)


def mixed_decode_tasks(p, zs, b):
    """The general per-task-copies form: ``decode`` once per copy, keep loss ``k``."""
    return jnp.diagonal(jax.vmap(lambda z: mixed_decode(p, z, b))(zs))


BALANCERS = {
    "mgda": lambda: mtl.balancers.mgda(shared=sp.shared_w1),
    "graddrop": lambda: mtl.balancers.graddrop(seed=7, shared=sp.shared_w1),
}


def _run(decode, decode_tasks_fn, balancer, *, mesh=None, num_steps=2):
    rep = mtl.training.Representation(sp.encode, decode, decode_tasks_fn)
    loss_fn = lambda p, b: decode(p, sp.encode(p, b), b)
    step = mtl.training.make_train_step(
        loss_fn, balancer, optax.sgd(0.1), mode="representation", representation=rep, mesh=mesh
    )
    batches = [sp.make_batch(seed=s) for s in range(2)]
    if mesh is not None:
        batches = [mtl.training.shard_batch(b, mesh) for b in batches]
    state = step.init(sp.make_params())
    weights = []
    for i in range(num_steps):
        state, metrics = step(state, batches[i % 2])
        weights.append(np.asarray(metrics["weights"]))
    leaves = [np.asarray(jax.device_get(x)) for x in jax.tree_util.tree_leaves(state.params)]
    return leaves, weights


def _assert_same(a, b):
    for x, y in zip(a[0], b[0]):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack(a[1]), np.stack(b[1]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_separable_heads_match_the_vjp_route(name):
    old = _run(sp.decode, None, BALANCERS[name]())
    new = _run(sp.decode, decode_tasks, BALANCERS[name]())
    _assert_same(new, old)


def test_per_task_copies_are_exact_for_mixed_heads():
    old = _run(mixed_decode, None, mtl.balancers.upgrad())
    new = _run(mixed_decode, mixed_decode_tasks, mtl.balancers.upgrad())
    _assert_same(new, old)
    # A separable decode_tasks on these mixed heads is wrong: the routes must differ,
    # or the comparison above would not be testing anything.
    wrong = lambda p, zs, b: mixed_decode(p, zs[0], b)
    bad = _run(mixed_decode, wrong, mtl.balancers.upgrad())
    assert not all(np.allclose(x, y, atol=1e-6) for x, y in zip(bad[0], old[0]))


def test_four_devices_match_one():
    mesh = jax.make_mesh((4,), ("data",))
    one = _run(sp.decode, decode_tasks, mtl.balancers.mgda(shared=sp.shared_w1))
    four = _run(sp.decode, decode_tasks, mtl.balancers.mgda(shared=sp.shared_w1), mesh=mesh)
    _assert_same(four, one)


def test_nonfinite_task_gradient_is_flagged():
    rep = mtl.training.Representation(sp.encode, sp.decode, decode_tasks)
    step = mtl.training.make_train_step(
        sp.loss_fn, mtl.balancers.mgda(), optax.sgd(0.1), mode="representation", representation=rep
    )
    batch = sp.make_batch()
    batch["loss_poison"][:, 1] = np.nan
    state = step.init(sp.make_params())
    new, metrics = step(state, batch)
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(np.asarray(metrics["task_finite"]), [True, False, True])
    assert int(new.skipped) == 1


def test_wrong_shape_raises():
    rep = mtl.training.Representation(
        sp.encode, sp.decode, lambda p, zs, b: decode_tasks(p, zs, b)[:2]
    )
    step = mtl.training.make_train_step(
        sp.loss_fn, mtl.balancers.mgda(), optax.sgd(0.1), mode="representation", representation=rep
    )
    with pytest.raises(ValueError, match="decode_tasks"):
        step(step.init(sp.make_params()), sp.make_batch())
