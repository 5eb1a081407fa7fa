"""Mistakes at the training step's entry points, each with the message it must produce.

Every error is raised before any computation: at ``make_train_step`` or while
the step is traced, naming the argument and the offending value.
"""

import pathlib
import sys

import jax.numpy as jnp
import optax
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from step_problem import REPRESENTATION, K, decode, encode, loss_fn, make_batch, make_params

B = mtl.balancers


def _build(loss=loss_fn, balancer=None, optimizer=None, **kw):
    return mtl.training.make_train_step(
        loss, balancer or B.equal_weighting(), optimizer or optax.sgd(0.1), **kw
    )


def _run(step, batch=None):
    step(step.init(make_params()), make_batch() if batch is None else batch)


def _empty_batch():
    return {k: v[:0] for k, v in make_batch().items()}


ignores_z = mtl.training.Representation(
    encode=encode, decode=lambda p, z, b: decode(p, jnp.zeros_like(z), b)
)

# (id, thunk, exception, message regex)
MISTAKES = [
    (
        "losses [K, 1]",
        lambda: _run(_build(lambda p, b: loss_fn(p, b)[:, None])),
        ValueError,
        r"the task losses of loss_fn must have shape \[K\], got shape \(3, 1\) "
        r"\(a \[K, 1\] or \[1, K\] array: squeeze the extra axis\)",
    ),
    (
        "losses [K, 1] with num_tasks",
        lambda: _run(_build(lambda p, b: loss_fn(p, b)[:, None], B.dwa(num_tasks=K))),
        ValueError,
        r"got shape \(3, 1\)",
    ),
    (
        "losses as a Python list",
        lambda: _run(_build(lambda p, b: list(loss_fn(p, b)))),
        TypeError,
        r"the task losses of loss_fn must be one array of shape \[K\], got a Python list of 3 "
        r"items: return jnp\.stack\(losses\)",
    ),
    (
        "losses as a Python list, jacobian route",
        lambda: _run(_build(lambda p, b: list(loss_fn(p, b)), B.mgda())),
        TypeError,
        r"the task losses of loss_fn must be one array of shape \[K\], got a Python list of 3",
    ),
    (
        "no losses [0]",
        lambda: _run(_build(lambda p, b: loss_fn(p, b)[:0])),
        ValueError,
        r"the task losses of loss_fn has shape \(0,\): there must be at least one task",
    ),
    (
        "no losses [0], jacobian route",
        lambda: _run(_build(lambda p, b: loss_fn(p, b)[:0], B.mgda())),
        ValueError,
        r"the task losses of loss_fn has shape \(0,\)",
    ),
    (
        "(losses, aux) without has_aux",
        lambda: _run(_build(lambda p, b: (loss_fn(p, b), p))),
        TypeError,
        r"loss_fn returned a pair \(losses, aux\?\) but has_aux=False; pass has_aux=True",
    ),
    (
        "empty batch",
        lambda: _run(_build(), _empty_batch()),
        ValueError,
        r"batch leaf \['grad_poison'\] has shape \(0, 3\): an empty batch",
    ),
    (
        "decode ignores z (Gram balancer)",
        lambda: _run(_build(balancer=B.mgda(), mode="representation", representation=ignores_z)),
        ValueError,
        r"representation\.decode ignores its argument z: the losses do not depend on the "
        r"representation",
    ),
    (
        "decode ignores z (loss-only balancer)",
        lambda: _run(_build(mode="representation", representation=ignores_z)),
        ValueError,
        r"representation\.decode ignores its argument z",
    ),
    (
        "optax optimiser as the balancer",
        lambda: _build(balancer=optax.adam(1e-3)),
        TypeError,
        r"balancer must be a balancer from mtl_jax\.balancers \(e\.g\. "
        r"mtl_jax\.balancers\.mgda\(\)\); got GradientTransformationExtraArgs\. It is an optax "
        r"optimiser: pass it as optimizer=",
    ),
    (
        "balancer as the optimiser",
        lambda: _build(optimizer=B.mgda()),
        TypeError,
        r"optimizer is a balancer from mtl_jax\.balancers; pass it as balancer=",
    ),
    (
        "not a transform as the optimiser",
        lambda: _build(optimizer=0.1),
        TypeError,
        r"optimizer must be an optax\.GradientTransformation \(e\.g\. optax\.adam\(1e-3\)\); "
        r"got float",
    ),
    (
        "K mismatch with num_tasks, loss route",
        lambda: _run(_build(balancer=B.dwa(num_tasks=4))),
        ValueError,
        r"the balancer was built with num_tasks=4, but loss_fn gives K=3 tasks",
    ),
    (
        "K mismatch with num_tasks, jacobian route",
        lambda: _run(_build(balancer=B.mgda(num_tasks=2))),
        ValueError,
        r"the balancer was built with num_tasks=2, but loss_fn gives K=3 tasks",
    ),
    (
        "K mismatch with num_tasks, representation route",
        lambda: _run(
            _build(
                balancer=B.mgda(num_tasks=5), mode="representation", representation=REPRESENTATION
            )
        ),
        ValueError,
        r"the balancer was built with num_tasks=5, but loss_fn gives K=3 tasks",
    ),
    (
        "unknown on_nonfinite",
        lambda: _build(on_nonfinite="zero"),
        ValueError,
        r"on_nonfinite must be one of \('skip', 'skip_task', 'raise', 'ignore'\); got 'zero'",
    ),
]


@pytest.mark.parametrize(
    ("thunk", "exc", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistake_gives_clear_error(thunk, exc, message):
    with pytest.raises(exc, match=message):
        thunk()


def test_value_and_jacobian_checks_losses():
    f = mtl.value_and_jacobian(lambda p, b: list(loss_fn(p, b)))
    with pytest.raises(
        TypeError,
        match=r"the task losses of fun must be one array of shape \[K\], got a Python list",
    ):
        f(make_params(), make_batch())
    f = mtl.value_and_jacobian(lambda p, b: loss_fn(p, b)[:0])
    with pytest.raises(ValueError, match=r"the task losses of fun has shape \(0,\)"):
        f(make_params(), make_batch())
