"""How a balancer's ``update`` routes the leaves of a task Jacobian.

The leaves selected by the balancer's ``shared=`` mask are balanced (by the
Gram weights, the loss weights or the Jacobian rule of its spec); every other
leaf gets the plain sum over tasks. An absent task's rows are replaced by 0
with ``where`` before anything reads them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _task_tree, _validate
from mtl_jax._task_tree import MaskSpec

__all__ = ["add_offset", "route", "validate_task_inputs"]

PyTree = Any


def validate_task_inputs(task_grads: PyTree, params: PyTree | None, task_losses: Any) -> int:
    """Checks a task Jacobian against ``params`` and the losses; returns ``K``.

    Raises ``ValueError`` (``TypeError`` for a list of losses) naming what
    disagrees: the losses' shape, the task axis, the tree structure, a leaf's
    shape. A params-shaped input (no task axis), as a balancer placed after an
    optimiser in ``optax.chain`` receives, gets its own message.
    """
    losses = _validate.check_losses(task_losses)
    k = losses.shape[0]
    leaves = jax.tree_util.tree_leaves_with_path(task_grads)
    if not leaves:
        raise ValueError("the task Jacobian has no leaves")
    if params is not None:
        g_def = jax.tree_util.tree_structure(task_grads)
        p_def = jax.tree_util.tree_structure(params)
        if g_def != p_def:
            raise ValueError(
                f"task_grads structure {g_def} does not match params structure {p_def}"
            )
        p_leaves = jax.tree_util.tree_leaves(params)
        if all(jnp.shape(g) == jnp.shape(p) for (_, g), p in zip(leaves, p_leaves)):
            raise ValueError(
                "the balancer received params-shaped updates with no task axis: a balancer "
                "must receive the task Jacobian, so it must come first in optax.chain "
                "(e.g. optax.chain(mtl.balancers.mgda(), optax.adam(1e-3)))"
            )
    for i, (path, g) in enumerate(leaves):
        shape = jnp.shape(g)
        if not shape or shape[0] != k:
            where = (
                " (is the balancer after an optimiser in optax.chain? it must come first)"
                if not shape
                else ""
            )
            raise ValueError(
                f"leaf {jax.tree_util.keystr(path)} of the task Jacobian has shape {shape}, "
                f"expected a leading task axis of size K={k} (from task_losses){where}"
            )
        if params is not None:
            p = p_leaves[i]
            if tuple(shape) != (k, *jnp.shape(p)):
                raise ValueError(
                    f"leaf {jax.tree_util.keystr(path)}: task gradient shape {tuple(shape)} "
                    f"is not (K, *param.shape) = {(k, *jnp.shape(p))}"
                )
    return k


def _shape_tree(task_grads: PyTree) -> PyTree:
    """A params-shaped tree of shape structs for masks resolved without ``params``."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), task_grads
    )


def _resolve(mask: MaskSpec, ref: PyTree, name: str) -> list[bool]:
    try:
        flags = jax.tree_util.tree_leaves(_task_tree.resolve_mask(mask, ref))
    except ValueError as e:
        raise ValueError(f"{name}=: {e}") from None
    return flags


def route(
    spec: Any,
    task_grads: PyTree,
    state: Any,
    params: PyTree | None,
    task_losses: Any,
    task_presence: Any = None,
    *,
    shared_flags: Any = None,
    gram_flags: Any = None,
) -> tuple[PyTree, Any]:
    """A balancer's update: the shared leaves balanced by ``spec``, the others summed.

    Args:
      spec: the balancer's :class:`~mtl_jax.balancers.BalancerSpec`.
      task_grads, state, params, task_losses, task_presence: as ``update`` takes them.
      shared_flags: per leaf, whether ``spec.shared`` selects it, when the caller
        has resolved it already (the training step's plan); ``None`` resolves it.
      gram_flags: likewise for the Gram leaves (shared and in ``spec.gram_mask``).

    Returns:
      ``(update, new_state)``.
    """
    k = validate_task_inputs(task_grads, params, task_losses)
    presence = _presence.check_presence(task_presence, k)
    state_in = state
    losses = jnp.asarray(task_losses)
    ref = _shape_tree(task_grads) if params is None else params
    treedef = jax.tree_util.tree_structure(task_grads)
    leaves = jax.tree_util.tree_leaves(task_grads)
    flags = _resolve(spec.shared, ref, "shared") if shared_flags is None else list(shared_flags)
    if presence is not None:
        # An absent task's gradient is excluded (NaNs included). The loss and
        # Jacobian kinds' combine zeroes the shared leaves itself.
        leaves = [
            _presence.zero_absent(x, presence) if spec.kind == "gram" or not m else x
            for x, m in zip(leaves, flags)
        ]
    shared = [x for x, m in zip(leaves, flags) if m]
    if not shared:
        raise ValueError("shared= selects no leaf of the parameters: nothing to balance")
    extra = {} if presence is None else {"presence": presence}
    if spec.kind == "gram":
        if gram_flags is None:
            gflags = _resolve(spec.gram_mask, ref, "gram_mask")
            gram_flags = [m and gm for m, gm in zip(flags, gflags)]
        sel = [x for x, gm in zip(leaves, gram_flags) if gm]
        if not sel:
            raise ValueError("the Gram mask selects no shared leaf")
        g = _task_tree.gram(sel)
        w, state = spec.gram_weights(g, jax.lax.stop_gradient(losses), state, **extra)
        balanced = _task_tree.combine(cast_like(w, losses), shared)
    else:
        balanced, state = spec.combine(shared, losses, state, **extra)
    it = iter(balanced)
    out = [next(it) if m else _task_tree.sum_leading(x) for x, m in zip(leaves, flags)]
    out = add_offset(spec, state_in, out, flags)
    return jax.tree_util.tree_unflatten(treedef, out), state


def add_offset(spec: Any, state: Any, leaves: list, flags: Any) -> list:
    """``leaves`` (one per params leaf) plus ``spec.offset(state)`` on the shared ones.

    The offset is a parameter-space term of the update that no step gradient enters
    (:attr:`~mtl_jax.balancers.BalancerSpec.offset`); without one, ``leaves`` as given.
    """
    if spec.offset is None:
        return leaves
    flags = list(flags)
    offset = list(spec.offset(state))
    if len(offset) != sum(flags):
        raise ValueError(
            f"the balancer's offset has {len(offset)} leaves for {sum(flags)} shared leaves: "
            "build its state with the same shared= mask as the step"
        )
    it = iter(offset)
    return [x + next(it).astype(jnp.result_type(x)) if m else x for x, m in zip(leaves, flags)]


def cast_like(w: jax.Array, losses: jax.Array) -> jax.Array:
    """The weights ``w`` in the losses' floating dtype (at least float32)."""
    return jnp.asarray(w, dtype=jnp.promote_types(losses.dtype, jnp.float32))
