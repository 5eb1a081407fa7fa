"""Data parallelism with Adam on 4 fake CPU devices (every route, both mesh axis types and
the 2-process run are in test_scale_agreement.py)."""

import pathlib
import sys

import jax
import numpy as np
import optax

import mtl_jax as mtl

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from training_problem import NUM_STEPS, make_problem  # noqa: E402


def _train(step, params, batch):
    state = step.init(params)
    for _ in range(NUM_STEPS):
        state, _ = step(state, batch)
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


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
