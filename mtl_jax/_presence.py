"""Task presence: per-task losses from partially labelled batches, and the absent-task rules.

Real multi-task data is often partially labelled: in a given batch some task may
have no labelled example at all. Such a task is *absent* from the step. A
balancer told which tasks are present (``task_presence=``, a ``[K]`` bool array)
gives an absent task weight exactly 0, solves its problem over the present tasks
only and leaves the absent task's state untouched. Presence is data: it may
change from batch to batch inside one compiled function.

:func:`masked_task_losses` turns per-example losses and a label mask into the
per-task losses and the presence flags a training step and a balancer take. The
other functions here are the shared rules the balancers and the pure weighting
functions apply to ``presence``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TaskLosses", "masked_task_losses"]


class TaskLosses(NamedTuple):
    """Per-task losses and which tasks had a labelled example.

    Attributes:
      losses: ``[K]`` float, the mean loss over each task's labelled examples
        (0 for a task with none).
      present: ``[K]`` bool, whether task ``k`` had at least one labelled example.
    """

    losses: jax.Array
    present: jax.Array


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def masked_task_losses(
    per_example_losses: jax.typing.ArrayLike, label_mask: jax.typing.ArrayLike
) -> TaskLosses:
    """Per-task mean losses over the labelled examples, with each task's presence.

    For per-example losses ``ℓ[b, k]`` and a label mask ``m[b, k] ∈ {0, 1}``,

    .. math::

        L_k = \\frac{\\sum_b m_{bk}\\,ℓ_{bk}}{\\sum_b m_{bk}} \\quad(0 \\text{ if }
        \\textstyle\\sum_b m_{bk} = 0), \\qquad \\mathrm{present}_k = \\exists b:\\ m_{bk} = 1.

    An unlabelled entry is dropped with ``where``, not multiplied by 0, so a NaN or
    an infinity in an unlabelled example reaches neither the losses nor their
    gradient with respect to ``per_example_losses`` (which is 0 there). The chain
    rule further up still multiplies that 0 by the loss's own derivative: if an
    unlabelled entry's loss was computed against a NaN placeholder label, that
    derivative is NaN and ``0 × NaN = NaN``. Replace placeholder labels before
    computing the losses (e.g. ``jnp.where(label_mask, labels, 0)``).

    Args:
      per_example_losses: ``[B, K]`` float, the loss of example ``b`` on task ``k``
        (batch first, tasks last).
      label_mask: ``[B, K]`` bool or ``{0, 1}`` numbers: whether example ``b`` is
        labelled for task ``k``. Other values raise ``ValueError`` when the mask
        is concrete (not traced).

    Returns:
      A :class:`TaskLosses` ``(losses [K], present [K] bool)``; pass ``losses`` as
      ``task_losses=`` and ``present`` as ``task_presence=`` to a balancer.

    Example:
      >>> import jax.numpy as jnp
      >>> import mtl_jax as mtl
      >>> ell = jnp.array([[1.0, 5.0], [3.0, jnp.nan]])
      >>> mask = jnp.array([[True, False], [True, False]])
      >>> out = mtl.masked_task_losses(ell, mask)
      >>> out.losses.tolist(), out.present.tolist()
      ([2.0, 0.0], [True, False])
    """
    ell = jnp.asarray(per_example_losses)
    if ell.ndim != 2:
        raise ValueError(
            f"per_example_losses must have shape [B, K] (batch first, tasks last), got shape "
            f"{ell.shape}"
        )
    if not jnp.issubdtype(ell.dtype, jnp.floating):
        raise TypeError(f"per_example_losses must be floating point, got dtype {ell.dtype}")
    if _is_concrete(label_mask) and not isinstance(label_mask, jax.Array):
        label_mask = np.asarray(label_mask)
    if jnp.shape(label_mask) != ell.shape:
        raise ValueError(
            f"label_mask must have the shape of per_example_losses {ell.shape} ([B, K]), got "
            f"shape {jnp.shape(label_mask)}"
        )
    mask_dtype = jnp.result_type(label_mask)
    if mask_dtype != jnp.bool_:
        if not (
            jnp.issubdtype(mask_dtype, jnp.number)
            and not jnp.issubdtype(mask_dtype, jnp.complexfloating)
        ):
            raise ValueError(f"label_mask must be bool or {{0, 1}} numbers, got dtype {mask_dtype}")
        if _is_concrete(label_mask):
            values = np.asarray(label_mask)
            bad = ~((values == 0) | (values == 1))
            if bad.any():
                raise ValueError(
                    "label_mask must hold only 0 and 1 (or bools), got "
                    f"{values[bad].ravel()[:5].tolist()}"
                )
        label_mask = jnp.asarray(label_mask) != 0
    mask = jnp.asarray(label_mask, jnp.bool_)
    count = jnp.sum(mask, axis=0)
    total = jnp.sum(jnp.where(mask, ell, jnp.zeros((), ell.dtype)), axis=0)
    present = count > 0
    losses = total / jnp.maximum(count, 1).astype(ell.dtype)
    return TaskLosses(losses, present)


# --------------------------------------------------------------------------- shared rules


def check_presence(presence: Any, num_tasks: int, name: str = "task_presence") -> jax.Array | None:
    """``presence`` as a ``[K]`` bool array (``None`` stays ``None``); ``ValueError`` otherwise.

    Args:
      presence: ``None`` (every task present) or a ``[K]`` bool array, possibly traced.
      num_tasks: ``K``, from the losses.
      name: the argument's name, used in the messages.

    Returns:
      ``None`` or the ``[K]`` bool array.
    """
    if presence is None:
        return None
    if isinstance(presence, list | tuple):
        presence = np.asarray(presence)
    shape = jnp.shape(presence)
    dtype = jnp.result_type(presence)
    if shape != (num_tasks,):
        raise ValueError(
            f"{name} must be a [K] bool array with K={num_tasks} (one flag per task), got shape "
            f"{shape}"
        )
    if dtype != jnp.bool_:
        raise ValueError(
            f"{name} must be a bool array (True = the task is present), got dtype {dtype}; "
            "convert with jnp.asarray(x, bool) or use mtl.masked_task_losses"
        )
    return jnp.asarray(presence)


def num_present(presence: jax.Array | None, num_tasks: int, dtype: Any = jnp.float32) -> jax.Array:
    """The number of present tasks as a ``dtype`` scalar (``K`` when ``presence`` is None)."""
    if presence is None:
        return jnp.asarray(num_tasks, dtype)
    return jnp.sum(presence).astype(dtype)


def zero_absent(values: jax.Array, presence: jax.Array | None) -> jax.Array:
    """``values`` with the entries of the absent tasks (leading axis) set to 0.

    Uses ``where``, so a NaN in an absent task's entry does not survive.
    """
    if presence is None:
        return values
    values = jnp.asarray(values)
    p = presence.reshape(presence.shape + (1,) * (values.ndim - 1))
    return jnp.where(p, values, jnp.zeros((), values.dtype))


def keep_absent(new: jax.Array, old: jax.Array, presence: jax.Array | None) -> jax.Array:
    """``new`` for the present tasks (leading axis), ``old`` for the absent ones."""
    if presence is None:
        return new
    new = jnp.asarray(new)
    p = presence.reshape(presence.shape + (1,) * (new.ndim - 1))
    return jnp.where(p, new, jnp.asarray(old, new.dtype))


def restrict_gram(gram: jax.Array, presence: jax.Array | None) -> jax.Array:
    """``G`` with the rows and columns of the absent tasks set to 0 (NaNs included)."""
    if presence is None:
        return gram
    both = presence[:, None] & presence[None, :]
    return jnp.where(both, gram, jnp.zeros((), gram.dtype))


def masked_softmax(logits: jax.Array, presence: jax.Array | None) -> jax.Array:
    """``softmax`` over the present tasks; the absent tasks get 0 (all 0 if none is present)."""
    if presence is None:
        return jax.nn.softmax(logits)
    low = jnp.asarray(jnp.finfo(logits.dtype).min, logits.dtype)
    top = jnp.max(jnp.where(presence, logits, low))
    z = jnp.where(presence, logits, top) - top
    e = jnp.where(presence, jnp.exp(z), jnp.zeros((), logits.dtype))
    total = jnp.sum(e)
    return e / jnp.where(total > 0, total, jnp.ones((), logits.dtype))


def masked_mean(values: jax.Array, presence: jax.Array | None) -> jax.Array:
    """The mean of ``values`` over the present tasks (0 if none is present)."""
    if presence is None:
        return jnp.mean(values)
    n = jnp.sum(presence).astype(values.dtype)
    total = jnp.sum(jnp.where(presence, values, jnp.zeros((), values.dtype)))
    return total / jnp.maximum(n, jnp.ones((), values.dtype))


def keep_absent_tree(new: Any, old: Any, presence: jax.Array | None, num_tasks: int) -> Any:
    """:func:`keep_absent` on every leaf with a leading task axis of size ``num_tasks``.

    Meant for the state of an optimiser of ``[K]`` per-task parameters (Adam's
    moments keep the absent tasks' values; its step count, a scalar, advances).
    """
    if presence is None:
        return new

    def pick(n, o):
        if jnp.ndim(n) >= 1 and jnp.shape(n)[0] == num_tasks:
            return keep_absent(n, o, presence)
        return n

    return jax.tree_util.tree_map(pick, new, old)
