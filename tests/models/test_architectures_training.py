"""Every architecture trains with a loss-only, a Gram and a Jacobian balancer, on 4 devices."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from arch_zoo import OUT, REPRESENTATION, B, K, built

SCHEDULE = mtl.models.LTB.temperature_schedule(initial=2.0, final=0.5, decay_steps=2)


def _forward(model, params, batch):
    if isinstance(model, mtl.models.LTB):  # Gumbel key and temperature from the step
        s = batch["step"][0]
        rngs = {"gumbel": jax.random.fold_in(jax.random.key(0), s)}
        return model.apply(params, batch["x"], train=True, temperature=SCHEDULE(s), rngs=rngs)
    return model.apply(params, batch["x"])


def _losses(pred, y):
    return jnp.mean((pred - y) ** 2, axis=(1, 2))


@pytest.mark.parametrize("name", ["cross_stitch", "mmoe", "mtan", "cgc", "ple", "dselect_k", "ltb"])
def test_trains_with_every_kind_of_balancer(name):
    model, variables, x = built(name)
    # Auto axes: representation mode's Gram contracts the data-sharded batch axis, which
    # explicit-sharding meshes (the default of jax.make_mesh) reject.
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    y = jnp.sin(jnp.arange(K * B * OUT, dtype=jnp.float32)).reshape(K, B, OUT)
    batch = {"x": x, "y": jnp.moveaxis(y, 0, 1), "step": jnp.zeros((B,), jnp.int32)}
    loss_fn = lambda p, b: _losses(_forward(model, p, b), jnp.moveaxis(b["y"], 1, 0))
    # The summed loss before and after training, as one compiled program (evaluated eagerly,
    # each of the model's operations would compile on its own).
    total_loss = jax.jit(lambda p: jnp.sum(loss_fn(p, batch)))
    mask = model.shared_mask(variables)
    runs = {
        "dwa": (mtl.balancers.dwa(num_tasks=K, shared=mask), {}),
        "mgda": (mtl.balancers.mgda(num_tasks=K, shared=mask), {}),
        "graddrop": (mtl.balancers.graddrop(num_tasks=K, shared=mask), {}),
    }
    if name in REPRESENTATION:
        with_x = REPRESENTATION[name]
        rep = mtl.training.Representation(
            encode=lambda p, b: model.apply(p, b["x"], method="encode"),
            decode=lambda p, z, b: _losses(
                model.apply(p, z, *((b["x"],) if with_x else ()), method="decode"),
                jnp.moveaxis(b["y"], 1, 0),
            ),
        )
        runs["mgda/representation"] = (
            mtl.balancers.mgda(num_tasks=K, shared=mask),
            {"mode": "representation", "representation": rep},
        )
    start = float(total_loss(variables))
    for label, (balancer, kwargs) in runs.items():
        step = mtl.training.make_train_step(
            loss_fn, balancer, optax.adam(1e-2), mesh=mesh, **kwargs
        )
        state = step.init(variables)
        for i in range(3):
            b = dict(batch, step=jnp.full((B,), i, jnp.int32))
            state, metrics = step(state, mtl.training.shard_batch(b, mesh))
        assert np.all(np.isfinite(metrics["losses"])), label
        end = float(total_loss(state.params))
        assert end < start, (label, start, end)
