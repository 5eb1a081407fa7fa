"""The step resolves the balancer's masks once per trace (training/_plan.py)."""

import jax
import jax.numpy as jnp
import optax
import pytest

import mtl_jax as mtl
from mtl_jax import _task_tree
from mtl_jax.training import _plan

K = 3


def _params():
    return {"trunk": {"w": jnp.ones((4, 5))}, "heads": {"w": jnp.ones((K, 5))}}


def _encode(p, b):
    return jnp.tanh(b["x"] @ p["trunk"]["w"])


def _decode(p, z, b):
    return jnp.mean((z @ p["heads"]["w"].T - b["y"]) ** 2, axis=0)


def _loss(p, b):
    return _decode(p, _encode(p, b), b)


BATCH = {"x": jnp.ones((2, 4)), "y": jnp.zeros((2, K))}
REP = mtl.training.Representation(_encode, _decode)


# (mode, balancer, masks a step resolves): shared=, plus gram_mask= for a Gram
# balancer in the Gramian and Jacobian routes.
CASES = [
    ("loss", lambda: mtl.balancers.dwa(num_tasks=K, shared="trunk"), 1),
    ("gramian", lambda: mtl.balancers.upgrad(num_tasks=K, shared="trunk"), 2),
    ("jacobian", lambda: mtl.balancers.upgrad(num_tasks=K, shared="trunk"), 2),
    ("jacobian", lambda: mtl.balancers.graddrop(shared="trunk"), 1),
    ("representation", lambda: mtl.balancers.mgda(num_tasks=K, shared="trunk"), 1),
]


@pytest.mark.parametrize(("mode", "make", "expected"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_each_mask_is_resolved_once_per_traced_step(monkeypatch, mode, make, expected):
    rep = REP if mode == "representation" else None
    ts = mtl.training.make_train_step(
        _loss, make(), optax.sgd(0.1), mode=mode, representation=rep, jit=False
    )
    state = ts.init(_params())
    calls = []
    resolve = _task_tree.resolve_mask
    monkeypatch.setattr(
        _task_tree, "resolve_mask", lambda mask, tree: calls.append(mask) or resolve(mask, tree)
    )
    jax.make_jaxpr(ts.step)(state, BATCH)
    assert len(calls) == expected, calls


def test_plan_names_the_mask_that_does_not_fit():
    bal = mtl.balancers.mgda(shared="encoder")
    with pytest.raises(ValueError, match=r"shared=: .*selects no leaf"):
        _plan.resolve(bal, "gramian", _params())
    with pytest.raises(ValueError, match="route must be one of"):
        _plan.resolve(bal, "gram", _params())
    plan = _plan.resolve(mtl.balancers.mgda(shared="trunk"), "gramian", _params())
    assert plan.shared == (False, True) and plan.gram == (False, True)
    assert jax.tree_util.tree_leaves(plan.shared_tree()) == [False, True]
