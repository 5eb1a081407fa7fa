"""Trace-time checks at the training step's entry points.

Each check raises a ``TypeError``/``ValueError`` that names the argument and
the offending value, before JAX or a balancer meets the mistake and reports it
in its own terms (a tree-structure error, a ``ZeroDivisionError``, a silent
fallback to equal weighting).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import optax

from mtl_jax import _validate
from mtl_jax._jacobian import split_losses
from mtl_jax.balancers._base import Balancer

PyTree = Any

NONFINITE_POLICIES = ("skip", "skip_task", "raise", "ignore")


def check_factory_args(balancer: Any, optimizer: Any, on_nonfinite: Any) -> None:
    """Validates ``make_train_step``'s balancer, optimiser and non-finite policy."""
    if not isinstance(balancer, Balancer):
        hint = ""
        if isinstance(balancer, optax.GradientTransformation):
            hint = (
                " It is an optax optimiser: pass it as optimizer= and give a balancer "
                "(e.g. mtl_jax.balancers.equal_weighting()) as balancer="
            )
        raise TypeError(
            "balancer must be a balancer from mtl_jax.balancers (e.g. "
            f"mtl_jax.balancers.mgda()); got {type(balancer).__name__}.{hint}"
        )
    if isinstance(optimizer, Balancer):
        raise TypeError(
            "optimizer is a balancer from mtl_jax.balancers; pass it as balancer= and give an "
            "optax optimiser (e.g. optax.adam(1e-3)) as optimizer="
        )
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)); "
            f"got {type(optimizer).__name__}"
        )
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}; got {on_nonfinite!r}")


def recorded_weights(state: Any) -> jax.Array | None:
    """The task weights a balancer state records (see ``task_weights``), or ``None``."""
    from mtl_jax.balancers._state import task_weights

    try:
        return jnp.asarray(task_weights(state))
    except (ValueError, TypeError):
        return None


def balancer_num_tasks(state: Any) -> int | None:
    """The ``K`` a balancer state records weights for, or ``None`` if it records none."""
    recorded = recorded_weights(state)
    if recorded is None or recorded.ndim != 1 or recorded.shape[0] == 0:
        return None
    return int(recorded.shape[0])


def check_state_num_tasks(k: int, balancer_state: Any) -> None:
    """Raises if the balancer was built for a different number of tasks than ``loss_fn`` gives."""
    _validate.check_num_tasks(balancer_num_tasks(balancer_state), got=k, source="loss_fn")


def check_batch(batch: PyTree) -> None:
    """Raises on a batch without leaves or with an empty leading (example) axis."""
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    if not leaves:
        raise ValueError(f"batch has no array leaves; got {batch!r}")
    for path, x in leaves:
        shape = jnp.shape(x)
        if shape and shape[0] == 0:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path) or '<root>'} has shape {tuple(shape)}: "
                "an empty batch"
            )


def check_divisible(batch: PyTree, num_devices: int, data_axis: str) -> None:
    """Raises unless every batch leaf's leading axis splits evenly over ``num_devices``."""
    for path, x in jax.tree_util.tree_leaves_with_path(batch):
        shape = jnp.shape(x)
        if shape and shape[0] % num_devices:
            raise ValueError(
                f"batch size {shape[0]} (leaf {jax.tree_util.keystr(path) or '<root>'}) is not "
                f"divisible by the {num_devices} devices of mesh axis {data_axis!r}; use a "
                f"multiple of {num_devices}"
            )


def check_decode_uses_z(decode, params: PyTree, z: PyTree, batch: Any, has_aux: bool) -> None:
    """Raises if the losses of ``representation.decode`` do not depend on ``z``.

    The check reads the jaxpr of ``z -> losses``: it follows data dependence
    from the inputs forward (every output of an equation with a reached input is
    reached), which over-approximates dependence, so it never rejects a decode
    that uses ``z``.
    """

    def losses_of(zz):
        return split_losses(decode(params, zz, batch), has_aux, "representation.decode")[0]

    closed = jax.make_jaxpr(losses_of)(z)
    jaxpr = closed.jaxpr
    reached = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jex.Literal) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    if not any(not isinstance(v, jex.Literal) and v in reached for v in jaxpr.outvars):
        raise ValueError(
            "representation.decode ignores its argument z: the losses do not depend on the "
            "representation, so representation mode would balance nothing. decode must compute "
            "the losses from z = encode(params, batch)"
        )
