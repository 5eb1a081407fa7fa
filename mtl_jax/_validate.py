"""Argument checks shared by the whole package.

Every check raises a ``ValueError`` (a ``TypeError`` where the kind of object is
wrong) whose message names the argument and the value it got, before JAX or a
solver meets the mistake and reports it in its own terms. The checks run at
trace time: they read Python values and static shapes only, so they work the
same inside and outside the user's :func:`jax.jit`.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_int",
    "check_losses",
    "check_num_tasks",
    "check_number",
    "check_positive",
    "check_probability",
    "check_seed",
    "check_weights_shape",
]


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def _int_phrase(low: int) -> str:
    if low == 1:
        return "a positive int"
    if low == 0:
        return "a non-negative int"
    return f"an int >= {low}"


def check_int(name: str, value: Any, *, low: int = 1, allow_none: bool = False) -> int | None:
    """An int argument ``≥ low`` (``bool`` is not an int); ``ValueError`` otherwise.

    Args:
      name: the argument's name, used in the message.
      value: the value to check.
      low: the smallest allowed value (``1``: a positive int).
      allow_none: whether ``None`` passes (and is returned).

    Returns:
      ``value`` as a Python ``int`` (or ``None``).
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < low:
        alt = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {_int_phrase(low)}{alt}, got {value!r}")
    return int(value)


def _range_phrase(low, high, low_open, high_open) -> str:
    lo = "(" if low_open or low is None else "["
    hi = ")" if high_open or high is None else "]"
    a = "-inf" if low is None else f"{low:g}"
    b = "inf" if high is None else f"{high:g}"
    return f"a finite number in {lo}{a}, {b}{hi}"


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real argument within bounds, as a ``float``; ``ValueError`` otherwise.

    Args:
      name: the argument's name, used in the message.
      value: a Python or NumPy real (``bool`` and arrays are refused).
      low, high: the bounds (``None``: unbounded on that side).
      low_open, high_open: whether the bound itself is excluded.

    Returns:
      ``float(value)``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        raise ValueError(
            f"{name} must be {_range_phrase(low, high, low_open, high_open)}, got {value!r}"
        )
    return v


def check_positive(name: str, value: Any) -> float:
    """A finite real ``> 0`` (a step size, a tolerance, a temperature); ``ValueError`` otherwise."""
    return check_number(name, value, low=0.0, low_open=True)


def check_probability(name: str, value: Any, *, low_open: bool = False, high_open: bool = False):
    """A finite real in ``[0, 1]`` (either end excluded on request); ``ValueError`` otherwise."""
    return check_number(name, value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed must be a Python (or NumPy) int; ``ValueError`` otherwise."""
    if not _is_int(seed):
        raise ValueError(f"{name} must be an int, got {seed!r}")
    return int(seed)


def check_num_tasks(
    num_tasks: Any,
    name: str = "num_tasks",
    *,
    required: bool = False,
    got: int | None = None,
    source: str = "task_losses",
) -> int | None:
    """Checks a number of tasks ``K``, and that the data agree with it.

    ``num_tasks`` must be a positive int, or ``None`` when not ``required``
    (nothing fixed at build time). With ``got`` (the ``K`` the data carry,
    e.g. the length of the losses), a ``num_tasks`` that is not ``None`` must
    equal it.

    Args:
      num_tasks: the ``K`` a balancer (or a model) was built with, or ``None``.
      name: the argument's name, used in the message.
      required: whether ``None`` is refused.
      got: the ``K`` found in the data, if any.
      source: what ``got`` was read from, used in the message.

    Returns:
      ``num_tasks`` as an ``int`` (or ``None``).
    """
    if num_tasks is None:
        if required:
            raise ValueError(f"{name} must be given (a positive int), got None")
        return None
    if not _is_int(num_tasks) or num_tasks < 1:
        raise ValueError(f"{name} must be a positive int, got {num_tasks!r}")
    if got is not None and got != num_tasks:
        raise ValueError(
            f"the balancer was built with {name}={num_tasks}, but {source} gives K={got} tasks"
        )
    return int(num_tasks)


def check_losses(
    losses: Any, *, name: str = "task_losses", num_tasks: int | None = None
) -> jax.Array:
    """``losses`` as a ``[K]`` floating array; ``TypeError``/``ValueError`` on anything else.

    Catches the usual mistakes of a loss function: a Python list of scalar
    losses, a ``[K, 1]`` column, no task at all, integer losses.

    Args:
      losses: the per-task losses.
      name: what the losses are called in the message (an argument name, or
        e.g. ``"the task losses of loss_fn"``).
      num_tasks: if given, the ``K`` the losses must have.

    Returns:
      ``jnp.asarray(losses)``.
    """
    if isinstance(losses, list | tuple):
        raise TypeError(
            f"{name} must be one array of shape [K], got a Python {type(losses).__name__} of "
            f"{len(losses)} items: return jnp.stack(losses) from the loss function"
        )
    if not hasattr(losses, "shape") or not hasattr(losses, "dtype"):
        raise TypeError(f"{name} must be one array of shape [K], got {type(losses).__name__}")
    losses = jnp.asarray(losses)
    if losses.ndim != 1:
        hint = ""
        if losses.ndim == 2 and 1 in losses.shape:
            hint = " (a [K, 1] or [1, K] array: squeeze the extra axis)"
        raise ValueError(f"{name} must have shape [K], got shape {tuple(losses.shape)}{hint}")
    if losses.shape[0] == 0:
        raise ValueError(f"{name} has shape (0,): there must be at least one task")
    check_num_tasks(num_tasks, got=losses.shape[0], source=name)
    if not jnp.issubdtype(losses.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point, got dtype {losses.dtype}")
    return losses


def check_weights_shape(weights: Any, num_tasks: int, name: str) -> None:
    """Raises ``ValueError`` unless ``weights`` has shape ``[K]`` (static, so fine under jit)."""
    chex.assert_shape(
        weights,
        (num_tasks,),
        custom_message=f"{name} must return weights of shape [K] = ({num_tasks},)",
        exception_type=ValueError,
    )
