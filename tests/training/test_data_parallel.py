"""Data parallelism on 4 fake CPU devices (the 2-process run is in test_scale_agreement.py)."""

import pathlib
import sys

import jax
import numpy as np
import optax
import pytest

import mtl_jax as mtl

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from training_problem import NUM_STEPS, make_problem  # noqa: E402


def _train(step, params, batch):
    state = step.init(params)
    for _ in range(NUM_STEPS):
        state, _ = step(state, batch)
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


@pytest.mark.parametrize("balancer", ["equal_weighting", "mgda"])
def test_four_devices_match_one(balancer):
    assert jax.device_count() >= 4
    mesh = jax.make_mesh((4,), ("data",))
    params, batch, single = make_problem(balancer)
    _, _, parallel = make_problem(balancer, mesh=mesh)
    ref = _train(single, params, batch)
    got = _train(parallel, params, mtl.training.shard_batch(batch, mesh))
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # The step really ran sharded: its input batch lives on 4 devices.
    assert len(mtl.training.shard_batch(batch, mesh)[0].sharding.device_set) == 4


def test_four_devices_match_one_with_adam():
    mesh = jax.make_mesh((4,), ("data",))
    opt = optax.adam(1e-3)
    params, batch, single = make_problem("equal_weighting", optimizer=opt)
    _, _, parallel = make_problem("equal_weighting", mesh=mesh, optimizer=opt)
    for a, b in zip(
        _train(parallel, params, mtl.training.shard_batch(batch, mesh)),
        _train(single, params, batch),
    ):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
