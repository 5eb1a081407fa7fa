"""The non-finite policy: NaN and Inf injected into one task's loss and into one
leaf of one task's gradient, for a loss-only (DWA), a Gram (MGDA) and a Jacobian
(GradDrop) balancer, in every route each supports, on 1 and 4 devices.

``"skip"`` leaves params, balancer and optimiser states bit-identical and counts
the step; ``"raise"`` names the step and the task; ``"ignore"`` lets NaN through.
"""

import functools
import pathlib
import sys

import jax
import numpy as np
import optax
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from step_problem import make_batch, make_params, make_step

COMBOS = [
    ("dwa", "loss"),
    ("dwa", "jacobian"),
    ("dwa", "representation"),
    ("mgda", "jacobian"),
    ("mgda", "representation"),
    ("graddrop", "jacobian"),
    ("graddrop", "representation"),
]
INJECTIONS = [
    ("loss_poison", np.nan, "loss"),
    ("loss_poison", np.inf, "loss"),
    ("grad_poison", np.nan, "gradient"),
    ("grad_poison", -np.inf, "gradient"),
]
TASK = 1


def _poisoned(key, value):
    batch = make_batch(seed=1)
    batch[key][0, TASK] = value
    return batch


def _leaves(tree):
    out = []
    for x in jax.tree_util.tree_leaves(tree):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(jax.device_get(x)))
    return out


def _assert_same(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@functools.cache
def _mesh():
    return jax.make_mesh((4,), ("data",))


@pytest.mark.parametrize("devices", [1, 4])
@pytest.mark.parametrize("combo", COMBOS, ids=":".join)
def test_skip_and_raise(combo, devices):
    mesh = _mesh() if devices == 4 else None
    place = (lambda b: mtl.training.shard_batch(b, mesh)) if mesh else (lambda b: b)
    step = make_step(*combo, mesh=mesh, optimizer=optax.adam(1e-2))
    assert step.on_nonfinite == "skip"
    state, metrics = step(step.init(make_params()), place(make_batch()))
    assert bool(metrics["finite"]) and int(state.skipped) == 0
    raising = step._replace(on_nonfinite="raise")
    for n, (key, value, what) in enumerate(INJECTIONS, start=1):
        new, metrics = step(state, place(_poisoned(key, value)))
        assert not bool(metrics["finite"]), (key, value)
        assert int(new.skipped) == n and int(metrics["skipped"]) == n
        assert int(new.step) == int(state.step) + 1
        _assert_same(new.params, state.params)
        _assert_same(new.balancer_state, state.balancer_state)
        _assert_same(new.opt_state, state.opt_state)
        if what == "loss":
            np.testing.assert_array_equal(np.asarray(metrics["task_finite"]), [True, False, True])
        msg = rf"non-finite {what} at step {int(state.step)} in task\(s\) \[{TASK}\]"
        with pytest.raises(FloatingPointError, match=msg) as info:
            raising(state, place(_poisoned(key, value)))
        _assert_same(info.value.state.params, state.params)
        state = new
    # A clean batch afterwards trains normally.
    new, metrics = step(state, place(make_batch(seed=2)))
    assert bool(metrics["finite"]) and int(new.skipped) == len(INJECTIONS)
    assert not np.array_equal(_leaves(new.params)[0], _leaves(state.params)[0])


def test_ignore_lets_nan_through():
    step = make_step("dwa", "loss", on_nonfinite="ignore")
    state, metrics = step(step.init(make_params()), _poisoned("grad_poison", np.nan))
    assert not bool(metrics["finite"]) and int(state.skipped) == 0
    assert np.isnan(np.asarray(state.params["heads"]["w"])).all()


def test_unknown_policy():
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of .* got 'nan'"):
        make_step("dwa", "loss", on_nonfinite="nan")
