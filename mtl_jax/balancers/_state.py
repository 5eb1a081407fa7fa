"""State helpers shared by the balancers: recorded weights, dtypes, keys, inner optimisers.

A balancer's state is a pytree of fixed shapes and dtypes (its shapes are set at
``init``, before the task Jacobian is seen). The helpers below keep it so:
:func:`like` casts a new state to the old one's dtypes, :func:`record_weights`
stores the weights of the last update, and :func:`key_data`/:func:`split_key`
keep a PRNG key as raw ``uint32`` data.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _validate

__all__ = [
    "WeightsState",
    "init_weights",
    "init_weights_state",
    "inner_optimizer",
    "key_data",
    "like",
    "record_weights",
    "split_key",
    "task_weights",
]

_NOT_GIVEN = object()


def task_weights(state: Any, default: Any = _NOT_GIVEN) -> jax.Array | None:
    """The task weights a balancer applied at its last update (``state.weights``).

    The recorded weights are those of the update the balancer just returned:
    for the methods whose update is ``Σ_k w_k g_k`` on the shared leaves, ``w``.
    Before the first update they are the method's initial weights.

    Works on a balancer's own state and on an ``optax.chain`` state whose first
    element is a balancer state.

    Args:
      state: a balancer state, or an ``optax.chain`` state starting with one.
      default: returned when the balancer was built without ``num_tasks`` and so
        records no weights; if not given, that case raises ``ValueError``.

    Returns:
      The ``[K]`` weights (or ``default``).
    """
    target = state
    if not hasattr(state, "weights") and isinstance(state, tuple) and state:
        target = state[0]
    if not hasattr(target, "weights"):
        raise ValueError(f"no task weights in a state of type {type(state).__name__}")
    if target.weights is None:
        if default is not _NOT_GIVEN:
            return default
        raise ValueError(
            "this balancer was built without num_tasks, so its state records no task "
            "weights; build it with num_tasks=K to record them"
        )
    return target.weights


class WeightsState(NamedTuple):
    """State of a balancer with no state of its own but the weights it last used.

    ``weights`` is ``[K]`` (float32) when the balancer was built with
    ``num_tasks``; else ``None`` (nothing recorded: a state's shapes are fixed at
    ``init``, before ``K`` is known, and orbax cannot save zero-size arrays).
    """

    weights: jax.Array | None  # [K] float32, or None without num_tasks


def init_weights_state(num_tasks: int | None) -> WeightsState:
    """A :class:`WeightsState` of ``[K]`` ones, or of ``None`` without ``num_tasks``."""
    return WeightsState(init_weights(num_tasks))


def init_weights(num_tasks: int | None, value: float = 1.0) -> jax.Array | None:
    """``[K]`` float32 ``value``, or ``None`` if ``num_tasks`` is None."""
    return None if num_tasks is None else jnp.full((num_tasks,), value, jnp.float32)


def record_weights(recorded: jax.Array | None, weights: jax.Array) -> jax.Array | None:
    """``weights`` cast to ``recorded``'s dtype, or ``None`` if nothing is recorded."""
    if recorded is None:
        return None
    _validate.check_num_tasks(recorded.shape[0], got=weights.shape[0], source="the task Jacobian")
    return weights.astype(recorded.dtype)


def like(new: Any, old: Any) -> Any:
    """``new`` cast leaf-wise to the dtypes of ``old`` (keeps a state's dtypes fixed)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.asarray(n).astype(jnp.result_type(o)), new, old)


def key_data(seed: int) -> jax.Array:
    """The raw ``uint32`` data of ``jax.random.key(seed)``, as a state stores it."""
    return jax.random.key_data(jax.random.key(seed))


def split_key(data: jax.Array, num: int = 1) -> tuple[jax.Array, jax.Array]:
    """Splits stored key data: ``(new key data, num subkeys)`` (typed keys)."""
    keys = jax.random.split(jax.random.wrap_key_data(data), num + 1)
    return jax.random.key_data(keys[0]), keys[1:]


def inner_optimizer(
    optimizer: optax.GradientTransformation | None, learning_rate: Any
) -> optax.GradientTransformation:
    """The optimiser of a balancer's own learned quantities (log-variances, scales, weights).

    ``optimizer`` if given (it must be an optax transform), else Adam at
    ``learning_rate`` (a positive finite number).
    """
    if optimizer is None:
        learning_rate = _validate.check_positive("learning_rate", learning_rate)
        return optax.adam(learning_rate)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {optimizer!r}")
    return optimizer
