"""The step's plan: the balancer's spec and masks resolved once per traced step.

A route needs to know, for every leaf of the parameters, whether the balancer's
``shared=`` selects it and (for a Gram balancer) whether its Gram matrix reads
it. :func:`resolve` answers both once, when the step is traced, into a frozen
:class:`StepPlan` that every route (and the balancer's own ``update``, through
its ``shared_flags``/``gram_flags`` extra arguments) reads instead of resolving
the masks again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from mtl_jax import _task_tree
from mtl_jax.balancers._base import Balancer, BalancerSpec

__all__ = ["ROUTES", "StepPlan", "resolve"]

PyTree = Any

ROUTES = ("loss", "gramian", "jacobian", "representation")


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """What one traced training step does, resolved against the params tree.

    Attributes:
      route: ``"loss"``, ``"gramian"``, ``"jacobian"`` or ``"representation"``.
      balancer: the balancer (its ``update`` runs in the Jacobian route).
      treedef: the params tree's structure.
      shared: per params leaf, whether ``shared=`` selects it.
      gram: per params leaf, whether the Gram matrix reads it (a shared leaf
        inside ``gram_mask``); ``None`` unless a Gram balancer runs in the
        ``"gramian"`` or ``"jacobian"`` route.
      chunk_size: tasks per chunk of per-task VJPs (``None``: the route's default).
      has_aux: whether the (normalised) loss function returns aux.
      per_task: the per-task non-finite policy (``on_nonfinite="skip_task"``).
    """

    route: str
    balancer: Balancer
    treedef: Any
    shared: tuple[bool, ...]
    gram: tuple[bool, ...] | None = None
    chunk_size: int | None = None
    has_aux: bool = False
    per_task: bool = False

    @property
    def spec(self) -> BalancerSpec:
        """The balancer's :class:`~mtl_jax.balancers.BalancerSpec`."""
        return self.balancer.spec

    def shared_tree(self) -> PyTree:
        """``shared`` as a params-shaped tree of Python bools."""
        return jax.tree_util.tree_unflatten(self.treedef, list(self.shared))


def _flags(mask: Any, params: PyTree, name: str) -> tuple[bool, ...]:
    try:
        return tuple(jax.tree_util.tree_leaves(_task_tree.resolve_mask(mask, params)))
    except ValueError as e:
        raise ValueError(f"{name}=: {e}") from None


def resolve(
    balancer: Balancer,
    route: str,
    params: PyTree,
    *,
    chunk_size: int | None = None,
    has_aux: bool = False,
    per_task: bool = False,
) -> StepPlan:
    """Resolves ``balancer``'s masks against ``params`` for ``route`` (trace time).

    Args:
      balancer: the step's balancer.
      route: one of :data:`ROUTES`.
      params: the parameters (arrays or shape structs; only the tree is read).
      chunk_size, has_aux, per_task: the step's settings, carried for the routes.

    Returns:
      A :class:`StepPlan`.

    Raises:
      ValueError: an unknown ``route``, or a mask that does not fit ``params``
        (the message names ``shared=`` or ``gram_mask=``).
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    spec = balancer.spec
    shared = _flags(spec.shared, params, "shared")
    gram = None
    if route in ("gramian", "jacobian") and spec.kind == "gram":
        in_gram = _flags(spec.gram_mask, params, "gram_mask")
        gram = tuple(s and g for s, g in zip(shared, in_gram))
    return StepPlan(
        route,
        balancer,
        jax.tree_util.tree_structure(params),
        shared,
        gram,
        chunk_size,
        has_aux,
        per_task,
    )
