"""What a non-finite loss or gradient does to a training step.

Policies (``make_train_step(..., on_nonfinite=...)``):

* ``"skip"`` (default): inside the jitted step, a finiteness flag of the
  losses, the per-task gradients the route forms, the balanced gradient and the
  optimiser's update selects (``jnp.where``) between the new and the old
  params, balancer and optimiser states, so a bad batch leaves them unchanged.
  ``TrainState.skipped`` counts such steps; no host round-trip.
* ``"skip_task"``: a task whose loss or per-task gradient is non-finite is
  treated as absent for this step (weight 0, left out of the balancer's
  problem, its rows zeroed with ``where``), the other tasks train, and
  ``TrainState.task_skipped[k]`` counts it. When the non-finite value cannot be
  pinned on a task (a finite loss with a non-finite gradient in the loss
  route's single backward pass; a non-finite balanced gradient, update or model
  state), the whole step is skipped as under ``"skip"`` and
  ``metrics["unattributed"]`` says so.
* ``"raise"``: the same selection as ``"skip"``, then the Python wrapper reads the flag and
  raises ``FloatingPointError`` naming the step and the offending task(s).
* ``"ignore"``: no selection; non-finite values propagate into the state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax._jacobian import value_and_jacobian

PyTree = Any


def tree_finite(tree: PyTree) -> jax.Array:
    """A scalar bool: every inexact leaf of ``tree`` is finite."""
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def select(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """``new`` where ``ok`` else ``old``, leaf by leaf (PRNG keys included)."""

    def one(a, b):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = jnp.where(ok, jax.random.key_data(a), jax.random.key_data(b))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        return jnp.where(ok, a, b)

    return jax.tree_util.tree_map(one, new, old)


@functools.lru_cache(maxsize=32)
def make_diagnose(
    loss_fn: Callable, has_aux: bool, takes_key: bool = False, has_model_state: bool = False
) -> Callable[..., np.ndarray]:
    """A jitted ``(params, batch, key, model_state) -> [K]`` bool: task ``k``'s gradient is finite.

    Run on the host only after a step was flagged, for routes that never form
    per-task gradients (the loss route); compiled on first use. ``key`` is the
    flagged step's key (``None`` when the loss takes none) and ``model_state``
    the state's model state.
    """
    from mtl_jax.training._route_common import with_presence
    from mtl_jax.training._stateful import bind_loss

    def per_task(params, batch, key, model_state):
        f = bind_loss(
            loss_fn,
            key=key if takes_key else None,
            model_state=model_state,
            has_aux=has_aux,
            has_model_state=has_model_state,
        )
        f = with_presence(f, has_aux or has_model_state, "loss_fn")
        _, jac = value_and_jacobian(f, has_aux=True)(params, batch)
        flags = [
            jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))
            for x in jax.tree_util.tree_leaves(jac)
        ]
        return jnp.all(jnp.stack(flags), axis=0)

    jitted = jax.jit(per_task)
    return lambda params, batch, key=None, model_state=None: np.asarray(
        jitted(params, batch, key, model_state)
    )


def nonfinite_error(
    step_index: int, metrics: dict, diagnose: Callable[[], np.ndarray] | None
) -> FloatingPointError:
    """The ``FloatingPointError`` of the ``"raise"`` policy for a flagged step."""
    losses_ok = np.isfinite(np.asarray(metrics["losses"]))
    if not losses_ok.all():
        tasks = np.flatnonzero(~losses_ok).tolist()
        return FloatingPointError(f"non-finite loss at step {step_index} in task(s) {tasks}")
    grads_ok = np.asarray(metrics["task_finite"])
    if grads_ok.all() and diagnose is not None:
        grads_ok = diagnose()
    if not grads_ok.all():
        tasks = np.flatnonzero(~grads_ok).tolist()
        return FloatingPointError(f"non-finite gradient at step {step_index} in task(s) {tasks}")
    return FloatingPointError(
        f"non-finite update at step {step_index}: the losses and per-task gradients are finite, "
        "so the balancer or the optimiser produced it"
    )
