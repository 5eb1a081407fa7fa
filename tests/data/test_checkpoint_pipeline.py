"""The Grain iterator's position saved with the train state through ``Checkpointer``.

A run interrupted after k steps and restored into fresh objects (a new loader,
iterator, train state template and Checkpointer) sees exactly the batches the
uninterrupted run saw from step k on, and ends with the same parameters.
"""

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_jax as mtl

CONFIG = {"num_tasks": 2, "num_train": 40, "num_test": 1, "seed": 0}
TOTAL, K = 12, 7  # 5 batches per epoch: the restore point and the rest cross epochs


def _loader():
    source = mtl.data.data_source("grad_norm_toy", split="train", config=CONFIG)
    return mtl.data.make_loader(source, batch_size=8, seed=5, shard_options=grain.NoSharding())


def _problem():
    model = mtl.models.mlp_hps(2, hidden=8, out=100)
    params = model.init(jax.random.key(0), jnp.zeros((1, 250)))

    def loss_fn(p, b):
        pred = model.apply(p, b["x"])
        return jnp.mean((pred - jnp.moveaxis(b["y"], 1, 0) / 50.0) ** 2, axis=(1, 2))

    step = mtl.training.make_train_step(loss_fn, mtl.balancers.equal_weighting(), optax.adam(1e-2))
    return step, params


def test_resumed_run_sees_the_same_batches_and_ends_with_the_same_parameters(tmp_path):
    step, params = _problem()
    it, state, seen = iter(_loader()), step.init(params), []
    for _ in range(TOTAL):
        batch = next(it)
        seen.append(batch["x"].copy())
        state, _ = step(state, batch)
    reference = state.params

    it, state = iter(_loader()), step.init(params)
    with mtl.training.Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
        for i in range(K):
            state, _ = step(state, next(it))
            ckpt.save(i + 1, {"train": state, "data": mtl.data.iterator_state(it)})
    del it, state, ckpt  # "preemption"

    it = iter(_loader())  # the same jitted step (no second compile); every other object fresh
    template = {"train": step.init(params), "data": mtl.data.iterator_state(it)}
    with mtl.training.Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
        assert ckpt.latest_step() == K
        restored, _ = ckpt.restore_latest(template)
    mtl.data.restore_iterator(it, restored["data"])
    state = restored["train"]
    for i in range(K, TOTAL):
        batch = next(it)
        np.testing.assert_array_equal(batch["x"], seen[i])
        state, _ = step(state, batch)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    first = jax.tree_util.tree_leaves(params)[0]
    assert not np.array_equal(
        np.asarray(first), np.asarray(jax.tree_util.tree_leaves(reference)[0])
    )


def test_iterator_state_has_a_fixed_shape():
    it = iter(_loader())
    shapes = {mtl.data.iterator_state(it).shape}
    for _ in range(13):  # the position's digits grow
        next(it)
        shapes.add(mtl.data.iterator_state(it).shape)
    assert shapes == {(mtl.data._pipeline.STATE_SIZE,)}
