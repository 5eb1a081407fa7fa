"""Tree helpers for task Jacobians: pytrees whose leaves carry a leading task axis.

A *task Jacobian* has the structure of ``params``; each leaf has shape
``[K, *param_leaf.shape]`` where ``K`` is the number of tasks. The helpers here
compute the Gram matrix ``G = J Jᵀ`` leaf by leaf (no flattening of the whole
parameter vector), per-task norms, and the task-axis contraction ``Σ_k w_k J_k``.
They are the only place such contractions are written; balancers call them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "MaskSpec",
    "TreeMask",
    "combine",
    "gram",
    "num_tasks",
    "resolve_mask",
    "sum_tasks",
    "task_norms",
]

PyTree = Any


class TreeMask(NamedTuple):
    """A mask rule that looks at the whole tree: ``select(tree) -> pytree of bools``.

    For choices a per-leaf predicate cannot express, such as "the last shared
    leaf with two or more dimensions" (GradNorm's default layer).
    """

    select: Callable[[Any], Any]


MaskSpec = PyTree | Callable[[tuple, Any], bool] | TreeMask | None
"""Which leaves to act on: ``None`` (all), a pytree of bools, ``fn(path, leaf)``, or a
:class:`TreeMask`."""


def num_tasks(task_tree: PyTree) -> int:
    """The size ``K`` of the leading task axis, checked equal across leaves."""
    leaves = jax.tree_util.tree_leaves_with_path(task_tree)
    if not leaves:
        raise ValueError("the task Jacobian has no leaves")
    sizes = {}
    for path, leaf in leaves:
        if jnp.ndim(leaf) == 0:
            raise ValueError(
                f"leaf {jax.tree_util.keystr(path)} is a scalar: task-Jacobian leaves need a "
                "leading task axis"
            )
        sizes.setdefault(int(jnp.shape(leaf)[0]), jax.tree_util.keystr(path))
    if len(sizes) != 1:
        detail = ", ".join(f"{p}: {k}" for k, p in sizes.items())
        raise ValueError(f"leaves disagree on the number of tasks K ({detail})")
    return next(iter(sizes))


def resolve_mask(mask: MaskSpec, tree: PyTree) -> PyTree:
    """Turns a mask spec into a pytree of Python bools with ``tree``'s structure.

    Args:
      mask: ``None`` (every leaf selected), a pytree of bools with ``tree``'s
        structure (a prefix is not accepted), or a callable ``fn(path, leaf)``
        returning a bool, where ``path`` is the leaf's key path, or a
        :class:`TreeMask`.
      tree: the pytree whose leaves are selected (params or a task Jacobian).

    Returns:
      A pytree of Python bools with the structure of ``tree``.
    """
    if mask is None:
        return jax.tree_util.tree_map(lambda _: True, tree)
    if isinstance(mask, TreeMask):
        mask = mask.select(tree)
    elif callable(mask):
        return jax.tree_util.tree_map_with_path(lambda p, x: bool(mask(p, x)), tree)
    tree_def = jax.tree_util.tree_structure(tree)
    mask_def = jax.tree_util.tree_structure(mask)
    if tree_def != mask_def:
        raise ValueError(f"mask structure {mask_def} does not match the tree's {tree_def}")
    return jax.tree_util.tree_map(bool, mask)


def _selected(jac: PyTree, mask: MaskSpec) -> list[jax.Array]:
    m = resolve_mask(mask, jac)
    leaves = [
        x for x, keep in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(m)) if keep
    ]
    if not leaves:
        raise ValueError("the mask selects no leaf of the task Jacobian")
    return leaves


def gram(jac: PyTree, mask: MaskSpec = None) -> jax.Array:
    """The ``[K, K]`` Gram matrix ``G = J Jᵀ`` over the selected leaves.

    ``G[i, j] = Σ_leaves ⟨J_i, J_j⟩``, accumulated in float32 (or wider if the
    leaves are wider) one leaf at a time.

    Args:
      jac: a task Jacobian (every leaf has a leading axis of size ``K``).
      mask: which leaves enter the Gram matrix (see :func:`resolve_mask`).

    Returns:
      The symmetric positive semi-definite ``[K, K]`` Gram matrix.
    """
    leaves = _selected(jac, mask)
    k = num_tasks(leaves)
    dtype = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    out = jnp.zeros((k, k), dtype)
    for leaf in leaves:
        flat = jnp.reshape(leaf, (k, -1)).astype(dtype)
        out = out + jnp.matmul(flat, flat.T, precision=jax.lax.Precision.HIGHEST)
    return out


def task_norms(jac: PyTree, mask: MaskSpec = None) -> jax.Array:
    """Per-task Euclidean norms ``‖J_k‖₂`` over the selected leaves, shape ``[K]``."""
    leaves = _selected(jac, mask)
    k = num_tasks(leaves)
    dtype = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    sq = sum(jnp.sum(jnp.reshape(x, (k, -1)).astype(dtype) ** 2, axis=1) for x in leaves)
    return jnp.sqrt(sq)


def combine(weights: jax.typing.ArrayLike, jac: PyTree) -> PyTree:
    """The task-axis contraction ``Σ_k w_k J_k`` for every leaf.

    Args:
      weights: ``[K]`` task weights.
      jac: a task Jacobian.

    Returns:
      A pytree with ``jac``'s structure whose leaves have lost the task axis;
      each leaf keeps its dtype.
    """
    w = jnp.asarray(weights)
    k = num_tasks(jac)
    if w.shape != (k,):
        raise ValueError(f"weights have shape {w.shape}, expected ({k},)")

    def one(x):
        return jnp.tensordot(w.astype(x.dtype), x, axes=1)

    return jax.tree_util.tree_map(one, jac)


def sum_tasks(jac: PyTree) -> PyTree:
    """``Σ_k J_k`` for every leaf (the gradient of the summed losses)."""
    return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), jac)
