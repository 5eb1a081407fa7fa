"""Flax NNX models in the training step: Dropout, BatchNorm, checkpoints, linen via the bridge."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mtl_jax as mtl

K = 2


class Net(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.l2 = nnx.Linear(8, K, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))


def losses(model, batch):
    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2, axis=0)


def _batch(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return {
        "x": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
        "y": jnp.asarray(rng.normal(size=(n, K)), jnp.float32),
    }


def _setup():
    task = mtl.training.nnx_loss(losses, Net(nnx.Rngs(0)))
    ts = mtl.training.make_train_step(
        task.loss_fn, mtl.balancers.mgda(), optax.sgd(0.05), has_model_state=True
    )
    return task, ts


def test_nnx_model_trains_with_fresh_dropout_and_batchnorm(tmp_path):
    task, ts = _setup()
    assert task.streams == ("default",)
    state = ts.init(task.params, key=3, model_state=task.model_state)
    batch = _batch()
    # Same params, same batch, different step index: different dropout masks.
    _, m0 = ts(state, batch)
    _, m1 = ts(state._replace(step=state.step + 1), batch)
    assert not np.allclose(m0["losses"], m1["losses"])
    # Different seeds: different noise.
    _, m_other = ts(ts.init(task.params, key=4, model_state=task.model_state), batch)
    assert not np.allclose(m0["losses"], m_other["losses"])

    batches = [_batch(s) for s in range(4)]
    straight = state
    for b in batches:
        straight, m = ts(straight, b)
        assert bool(m["finite"])
    mean0 = task.model_state["bn"]["mean"][...]
    assert not np.allclose(straight.model_state["bn"]["mean"][...], mean0)

    # Checkpoint after 2 steps, resume, continue: bit-identical to the straight run.
    for b in batches[:2]:
        state, _ = ts(state, b)
    with mtl.training.Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(2, state)
        template = ts.init(task.params, key=99, model_state=task.model_state)
        resumed, _ = ckpt.restore_latest(template)
    for b in batches[2:]:
        resumed, _ = ts(resumed, b)
    for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # Back to an NNX model for evaluation.
    model = task.model(straight)
    model.eval()
    out = model(batches[0]["x"])
    assert out.shape == (8, K) and np.isfinite(np.asarray(out)).all()


def test_nnx_vmap_over_seeds_inside_jit():
    task, ts = _setup()
    batch = _batch()

    def run(seed):
        state = ts.init(task.params, key=seed, model_state=task.model_state)
        state, m = ts.step(state, batch)
        return m["losses"]

    many = jax.jit(jax.vmap(run))(jnp.arange(3))
    for s in range(3):
        np.testing.assert_allclose(many[s], run(s), rtol=1e-6)
    assert not np.allclose(many[0], many[1])


def test_closing_over_the_module_says_what_to_do():
    model = Net(nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, batch):  # the natural first attempt
        nnx.update(model, params)
        return losses(model, batch)

    ts = mtl.training.make_train_step(loss_fn, mtl.balancers.mgda(), optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"nnx_loss\(.*has_model_state=True"):
        ts(ts.init(params), _batch())
    # Merging inside the loss with the module's RNG/BatchNorm state from outside the step.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    merged = lambda p, b: losses(nnx.merge(graphdef, p, rest), b)
    ts = mtl.training.make_train_step(merged, mtl.balancers.mgda(), optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"nnx_loss\("):
        ts(ts.init(params), _batch())
    with pytest.raises(TypeError, match="ToNNX"):
        mtl.training.nnx_loss(losses, mtl.models.mlp_hps(K, hidden=8, out=3))


def test_linen_architecture_through_the_bridge_matches_linen():
    linen = mtl.models.mlp_hps(K, hidden=8, out=3)
    x, y = _batch()["x"], jnp.ones((K, 8, 3))
    batch = {"x": x, "y": y}
    per_task = lambda pred, b: jnp.mean((pred - b["y"]) ** 2, axis=(1, 2))

    bridged = nnx.bridge.ToNNX(linen, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(bridged, x)
    task = mtl.training.nnx_loss(lambda m, b: per_task(m(b["x"]), b), bridged)
    via_nnx = mtl.training.make_train_step(
        task.loss_fn, mtl.balancers.upgrad(), optax.sgd(0.1), has_model_state=True
    )
    s_nnx = via_nnx.init(task.params, model_state=task.model_state)

    # The same initial weights, trained as a plain linen loss.
    variables = {"params": jax.tree.map(lambda v: v[...], nnx.to_pure_dict(task.params))}
    plain = mtl.training.make_train_step(
        lambda p, b: per_task(linen.apply(p, b["x"]), b), mtl.balancers.upgrad(), optax.sgd(0.1)
    )
    s_lin = plain.init(variables)
    for _ in range(3):
        s_nnx, m_nnx = via_nnx(s_nnx, batch)
        s_lin, m_lin = plain(s_lin, batch)
        np.testing.assert_allclose(m_nnx["losses"], m_lin["losses"], rtol=1e-5)
