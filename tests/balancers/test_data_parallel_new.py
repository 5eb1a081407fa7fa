"""Data parallelism of the balancers added with the field's current baselines.

For each method, two training steps of a tiny two-layer regression with the batch
sharded over 4 fake CPU devices give the parameters and the recorded task weights
of the same two steps on one device (to float32 rounding of the cross-device
sums). The stochastic ones (SDMGrad's objective sampling) draw from the same seed
in both runs. The bilevel methods (Auto-Lambda, MOML, FORUM) run their
``meta_update`` before each step, on the same sharded training and validation
batches. The state keeps the dtype,
shape and weak type of every leaf from one step to the next, so the step compiles
once (a weakly typed initial weight vector used to recompile IMTL's second step).
"""

import pathlib
import sys

import jax
import numpy as np
import optax
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "training"))
from step_problem import K, loss_fn, make_batch, make_params

NEW = [
    "auto_lambda",
    "constant",
    "cosmos",
    "cr_mogm",
    "excess_mtl",
    "imtl_hybrid",
    "imtl_l",
    "forum",
    "krum",
    "modo",
    "moco",
    "moml",
    "pbi",
    "pcd",
    "scale_invariant",
    "sdmgrad",
    "trimmed_mean",
]
NUM_STEPS = 2
BILEVEL = {"auto_lambda", "moml", "forum"}
# So that the meta-updates move the weights on this problem: FORUM's constraint is
# inactive at φ = 0.1 (ν = 0, weights 0), and MOML's three validation hypergradients
# have 0 in their convex hull (its direction is exactly 0), unlike the first two's;
# Auto-Lambda's λ moves 1e-4 per meta-update at its default meta_lr.
BILEVEL_ARGS = {"forum": {"phi": 1.0}, "moml": {"meta_lr": 0.05}, "auto_lambda": {"meta_lr": 1e-3}}
META_ARGS = {"moml": {"val_presence": np.array([True, True, False])}}


def _balancer(name):
    extra = {"task_loss_fn": loss_fn, "inner_lr": 0.1} if name in BILEVEL else {}
    return mtl.balancers.make(name, num_tasks=K, **extra, **BILEVEL_ARGS.get(name, {}))


def _types(state):
    return [(x.dtype, x.shape, x.weak_type) for x in jax.tree_util.tree_leaves(state)]


def _train(name, mesh=None):
    """``NUM_STEPS`` steps on two alternating batches: final params and task weights."""
    tx = _balancer(name)
    step = mtl.training.make_train_step(loss_fn, tx, optax.sgd(0.1), mesh=mesh)
    place = (lambda b: b) if mesh is None else (lambda b: mtl.training.shard_batch(b, mesh))
    batches = [place(make_batch(seed=s)) for s in range(NUM_STEPS)]
    if mesh is not None:
        assert len(batches[0]["x"].sharding.device_set) == 4
    meta = jax.jit(tx.meta_update) if name in BILEVEL else None
    state = step.init(make_params())
    types = _types(state)
    for i in range(NUM_STEPS):
        if meta is not None:  # look-ahead on this batch, validated on the other one
            bstate = meta(
                state.balancer_state,
                state.params,
                batches[i],
                batches[1 - i],
                **META_ARGS.get(name, {}),
            )
            state = state._replace(balancer_state=bstate)
        state, _ = step(state, batches[i])
        assert _types(state) == types, (name, i)  # else the next step recompiles
    leaves = jax.tree_util.tree_leaves(state.params)
    weights = mtl.balancers.task_weights(state.balancer_state)
    return [np.asarray(jax.device_get(x)) for x in [*leaves, weights]]


def test_every_new_method_is_a_balancer():
    assert set(NEW) <= set(mtl.balancers.names())


@pytest.mark.parametrize("name", NEW)
def test_four_devices_match_one(name):
    mesh = jax.make_mesh((4,), ("data",))
    single = _train(name)
    parallel = _train(name, mesh)
    assert np.all(np.isfinite(np.concatenate([x.ravel() for x in single])))
    for a, b in zip(parallel, single, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=name)
    if name in BILEVEL:  # the meta-updates moved the weights from their initial values
        initial = mtl.balancers.task_weights(_balancer(name).init(make_params()))
        assert np.abs(single[-1] - np.asarray(initial)).max() > 1e-3, (name, single[-1])
