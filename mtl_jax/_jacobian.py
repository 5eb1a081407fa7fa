"""Per-task losses and their task Jacobian in one call.

The task Jacobian is built by reverse mode: one forward pass records the VJP,
then the VJP is applied to the rows of the ``K × K`` identity, vectorised with
:func:`jax.vmap` or, when ``chunk_size`` is given, in chunks of that many tasks
(:func:`task_map`) so that one chunk's backward intermediates are live at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax import _validate

__all__ = ["value_and_jacobian"]


def split_losses(out: Any, has_aux: bool, name: str) -> tuple[jax.Array, Any]:
    """Splits ``name``'s output into ``(losses[K], aux)`` and checks the losses.

    The losses are checked by :func:`mtl_jax._validate.check_losses`; this adds
    the ``has_aux`` contract: with ``has_aux=True`` the output must be a pair,
    and without it a pair that is not two scalar losses is refused.
    """
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                f"{name} must return (losses, aux) when has_aux=True; got {type(out).__name__}"
            )
        losses, aux = out
    else:
        if isinstance(out, tuple) and len(out) == 2 and not _is_loss_sequence(out):
            raise TypeError(
                f"{name} returned a pair (losses, aux?) but has_aux=False; pass has_aux=True"
            )
        losses, aux = out, None
    return _validate.check_losses(losses, name=f"the task losses of {name}"), aux


def _is_loss_sequence(out: tuple) -> bool:
    # A tuple of K scalar losses (K = 2) rather than (losses, aux).
    return all(jnp.ndim(x) == 0 for x in out if hasattr(x, "shape"))


def task_map(fn: Callable[[jax.Array], Any], k: int, dtype: Any, chunk_size: int | None) -> Any:
    """``fn`` applied to the rows ``e_k`` of the ``K × K`` identity, stacked on a task axis.

    ``chunk_size=None`` (or ``≥ K``) vectorises ``fn`` over all ``K`` rows at once
    (:func:`jax.vmap`). Otherwise the rows run in chunks of ``chunk_size``
    (vectorised within a chunk; ``chunk_size=1`` calls ``fn`` once per task),
    unrolled in the traced program, and the chunks' results are concatenated.
    Each chunk's cotangents carry an exact zero computed from the previous
    chunk's result (``_zero_after``), so the compiler runs the chunks one after
    another and one chunk's backward intermediates are live at a time. Unrolled
    chunks rather than a :func:`jax.lax.map` loop: on XLA CPU, convolutions inside
    a loop or a ``cond`` are not handed to its fast (YNNPACK) kernels and the W1
    Gramian step took ~50 s instead of ~1 s; and
    per-task VJPs of a convolutional net ran faster than one VJP vectorised over
    the tasks (W1 of the step-time benchmark, ``python -m benchmarks``).

    Args:
      fn: ``e[K] -> pytree``; linear in ``e`` (a VJP).
      k: the number of tasks ``K``.
      dtype: the dtype of the rows ``e_k``.
      chunk_size: rows per chunk, or ``None``.

    Returns:
      ``fn``'s output with a leading axis of size ``K`` on every leaf.
    """
    basis = jnp.eye(k, dtype=dtype)
    if chunk_size is None or chunk_size >= k:
        return jax.vmap(fn)(basis)
    parts: list[Any] = []
    for start in range(0, k, chunk_size):
        rows = basis[start : start + chunk_size]
        if parts:
            rows = rows + _zero_after(parts[-1]).astype(dtype)
        if rows.shape[0] == 1:
            parts.append(jax.tree_util.tree_map(lambda x: x[None], fn(rows[0])))
        else:
            parts.append(jax.vmap(fn)(rows))
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *parts)


def _zero_after(tree: Any) -> jax.Array:
    """A scalar ``0`` that XLA can only compute once every leaf of ``tree`` exists.

    Added to the next chunk's cotangents, it makes that chunk's backward pass
    depend on the previous chunk's result, so the chunks run one after another.
    Without it XLA CPU's scheduler interleaves the ``K`` independent per-task
    backward passes layer by layer, keeping every task's activation gradients
    live at once (~8.5 MB per task on W1; :func:`jax.lax.optimization_barrier`
    does not help there: XLA CPU drops it before scheduling). The value is
    exactly ``0`` also when ``tree`` holds NaN or ±inf (those are replaced before
    the product), so no task's non-finite gradient leaks into another task's.
    """
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.size(x)]
    total = sum((jnp.reshape(x, (-1,))[0].astype(jnp.float32) for x in leaves), jnp.float32(0))
    return jnp.where(jnp.isfinite(total), total, 0.0) * 0.0


def value_and_jacobian(
    fun: Callable[..., Any], *, has_aux: bool = False, chunk_size: int | None = None
) -> Callable[..., tuple[Any, Any]]:
    """Wraps ``fun(params, *args) -> losses[K]`` to also return the task Jacobian.

    Args:
      fun: returns the per-task losses, a 1-D array of shape ``[K]``, or
        ``(losses, aux)`` if ``has_aux``.
      has_aux: whether ``fun`` returns an auxiliary value next to the losses.
      chunk_size: if given, the per-task VJPs run ``chunk_size`` tasks at a time
        (bounding the backward-pass memory); ``None`` vectorises over all tasks.

    Returns:
      A function ``(params, *args) -> (value, jac)`` where ``value`` is what
      ``fun`` returns and ``jac`` has the structure of ``params`` with each leaf
      of shape ``[K, *leaf.shape]``: ``jac[k] = ∇_params losses[k]``.

    Example:
      >>> import jax.numpy as jnp
      >>> import mtl_jax as mtl
      >>> f = lambda p, x: jnp.stack([jnp.sum(p["w"] * x), jnp.sum(p["w"] ** 2)])
      >>> losses, jac = mtl.value_and_jacobian(f)({"w": jnp.ones(3)}, jnp.arange(3.0))
      >>> jac["w"].shape
      (2, 3)
    """
    _validate.check_int("chunk_size", chunk_size, allow_none=True)

    def checked(p, *args):
        losses, aux = split_losses(fun(p, *args), has_aux, "fun")
        return (losses, aux) if has_aux else losses

    def wrapped(params, *args):
        out = jax.vjp(lambda p: checked(p, *args), params, has_aux=has_aux)
        if has_aux:
            losses, vjp_fn, aux = out
        else:
            losses, vjp_fn = out
        k = losses.shape[0]
        jac = task_map(lambda e: vjp_fn(e)[0], k, losses.dtype, chunk_size)
        value = (losses, aux) if has_aux else losses
        return value, jac

    return wrapped
