"""The balancer protocol: task Jacobian in, params-shaped update out.

Every balancer is an :class:`optax.GradientTransformationExtraArgs` whose
``update(task_grads, state, params=None, *, task_losses, task_presence=None,
**extra_args)`` takes a task Jacobian (a pytree shaped like ``params`` whose leaves
carry a leading task axis of size ``K``) and the per-task losses ``[K]``, and
returns an update with the structure of ``params``. The leaves selected by
``shared=`` are balanced; every other (task-specific) leaf receives the plain sum
over tasks.

Task presence: ``task_presence`` is a ``[K]`` bool array saying which tasks had a
labelled example in the batch (``None``: all of them; see
:func:`mtl_jax.masked_task_losses`). An absent task gets weight exactly 0 and is
left out of the balancer's problem (a simplex, a projection, a normalisation is
taken over the present tasks), its gradient and loss are replaced by 0 with
``where`` (so a NaN there does not leak), and a stateful balancer leaves its
state untouched. A step on ``K`` tasks with the subset ``S`` present equals the
same balancer's step on the ``|S|`` present tasks alone. Presence is data: it may
change from batch to batch inside one compiled function. With every task absent
the weights are all 0.

Methods differ in what they need, which a training step can exploit:

* ``"loss"``: weights from the losses alone, ``w = f(losses, state)``; a step
  differentiates ``Σ_k w_k L_k`` once instead of building the Jacobian.
* ``"gram"``: weights from the Gram matrix ``G = J Jᵀ`` (and the losses),
  ``w = f(G, losses, state)``; the update is ``Σ_k w_k J_k``. Such methods also run
  on the Jacobian of the shared representation (MGDA-UB).
* ``"jacobian"``: anything else, e.g. per-coordinate rules such as GradDrop.

A :class:`Balancer` carries that description in :attr:`Balancer.spec`; build one
with :func:`loss_balancer`, :func:`gram_balancer` or :func:`jacobian_balancer`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence, _task_tree, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _routing, _state

__all__ = [
    "Balancer",
    "BalancerSpec",
    "check_balancer",
    "gram_balancer",
    "jacobian_balancer",
    "loss_balancer",
    "stateless_gram_balancer",
    "takes_presence",
]
PyTree = Any
Kind = Literal["loss", "gram", "jacobian"]

# (losses[K], state[, presence=]) -> (weights[K], state)
LossWeightFn = Callable[..., tuple[jax.Array, Any]]
# (gram[K, K], losses[K], state[, presence=]) -> (weights[K], state)
GramWeightFn = Callable[..., tuple[jax.Array, Any]]
# (jac, losses[K], state[, presence=]) -> (update, state): every leaf of jac is balanced.
CombineFn = Callable[..., tuple[PyTree, Any]]


class BalancerSpec(NamedTuple):
    """What a balancer needs from the training step, and how it computes.

    A balancer's ``update`` is derived from its spec (:func:`loss_balancer`,
    :func:`gram_balancer`, :func:`jacobian_balancer`), so every field below is
    what the method actually does.

    Each callable takes ``presence``, a ``[K]`` bool array or ``None`` (every task
    present, the behaviour without presence): an absent task's weight is 0, its
    rows of ``G``, of the Jacobian and its loss are replaced by 0, and the
    balancer's problem and state update cover the present tasks only.

    Attributes:
      kind: ``"loss"``, ``"gram"`` or ``"jacobian"`` (see the module docstring).
      shared: the ``shared=`` mask spec the balancer was built with.
      combine: ``(jac_leaves, losses, state, presence=None) -> (update_leaves,
        state)`` balancing every leaf it is given. ``update`` applies it to the
        shared leaves (for ``kind="jacobian"``); representation mode applies it to
        the Jacobian of the shared representation (every kind).
      loss_weights: for ``kind="loss"``: ``(losses, state, presence=None) ->
        (weights, state)``.
      gram_weights: for ``kind="gram"``: ``(G, losses, state, presence=None) ->
        (weights, state)``.
      gram_mask: for ``kind="gram"``: the leaves, among the shared ones, whose Gram
        matrix the weights depend on (``None``: all shared leaves; a
        :class:`~mtl_jax._task_tree.TreeMask` for a rule that looks at the whole
        tree, e.g. GradNorm's "last shared layer").
      representation: whether the method may run on the Jacobian of the shared
        representation instead of the shared parameters.
      gram_diagonal: for ``kind="gram"``: the weights read only ``diag(G)`` (the
        per-task squared gradient norms), so a training step may skip the
        ``K × K`` contraction (DB-MTL, GradNorm).
      offset: for ``kind="loss"``: ``state -> [update leaf per shared leaf]``, a
        parameter-space term every route adds to the shared leaves of the update
        ``Σ_k w_k ∇L_k``; it is read from the state the step receives and does not
        depend on the step's gradients (FORUM's stored upper-level direction), so
        the loss and representation routes stay exact. ``None``: no such term.
    """

    kind: Kind
    shared: MaskSpec
    combine: CombineFn
    loss_weights: LossWeightFn | None = None
    gram_weights: GramWeightFn | None = None
    gram_mask: MaskSpec = None
    representation: bool = False
    gram_diagonal: bool = False
    offset: Callable[[Any], list] | None = None


class Balancer(optax.GradientTransformationExtraArgs):
    """An optax transform that also exposes its :class:`BalancerSpec` as ``.spec``."""

    spec: BalancerSpec

    def __new__(cls, init, update, spec: BalancerSpec):
        obj = super().__new__(cls, init, update)
        obj.spec = spec
        return obj

    def __getnewargs__(self):
        return (self.init, self.update, self.spec)


def check_balancer(obj: Any, name: str = "balancer") -> Balancer:
    """Returns ``obj`` if it is a :class:`Balancer`, else raises a ``TypeError`` that says why.

    Catches the usual mix-ups: an optax optimiser (or an ``optax.chain`` holding a
    balancer) passed where a balancer is expected, and a balancer factory passed
    without calling it.

    Args:
      obj: the object to check.
      name: the argument's name, used in the message.

    Returns:
      ``obj``, unchanged.
    """
    if isinstance(obj, Balancer):
        return obj
    if isinstance(obj, optax.GradientTransformation):
        raise TypeError(
            f"{name} must be an mtl_jax.balancers.Balancer, got an optax "
            f"{type(obj).__name__} (an optimiser or an optax.chain). Pass the balancer "
            f"alone (e.g. mtl.balancers.mgda()) as {name}= and the optimiser separately "
            "(e.g. optimizer=optax.adam(1e-3))"
        )
    if callable(obj) and getattr(obj, "__module__", "").startswith("mtl_jax.balancers"):
        fname = getattr(obj, "__name__", repr(obj))
        raise TypeError(
            f"{name} must be a Balancer; got the factory {fname} itself: call it, "
            f"e.g. mtl.balancers.{fname}()"
        )
    raise TypeError(
        f"{name} must be an mtl_jax.balancers.Balancer (e.g. mtl.balancers.mgda()), "
        f"got {type(obj).__name__}: {obj!r:.80}"
    )


def _make(spec: BalancerSpec, init: Callable[[PyTree], Any]) -> Balancer:
    def update_fn(task_grads, state, params=None, *, task_losses, task_presence=None, **extra_args):
        # A training step that has resolved the masks already passes them as
        # shared_flags= / gram_flags= (per leaf); other extra arguments are ignored.
        return _routing.route(
            spec,
            task_grads,
            state,
            params,
            task_losses,
            task_presence,
            shared_flags=extra_args.get("shared_flags"),
            gram_flags=extra_args.get("gram_flags"),
        )

    return Balancer(init, update_fn, spec)


def takes_presence(fn: Callable) -> bool:
    """Whether ``fn`` has a parameter named ``presence`` that can be passed by keyword."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("presence")
    return p is not None and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _zero_absent_leaves(leaves: list, presence: jax.Array) -> list:
    return [_presence.zero_absent(x, presence) for x in leaves]


def loss_balancer(
    init: Callable[[PyTree], Any],
    weights_fn: LossWeightFn,
    *,
    shared: MaskSpec = None,
    offset: Callable[[Any], list] | None = None,
) -> Balancer:
    """Builds a balancer whose weights depend on the losses (and its state) only.

    Presence: with a ``task_presence``, a ``weights_fn`` that has a keyword
    ``presence`` parameter receives the ``[K]`` bool array and must give the
    absent tasks weight 0, solve its problem over the present ones and leave
    their state unchanged (every library method does). A ``weights_fn`` without
    it is *not presence-aware*: it is called as without presence (on the zeroed
    inputs) and only its absent tasks' weights are set to 0 afterwards; its
    problem still spans all ``K`` tasks and its state is updated as it chooses.

    Args:
      init: ``params -> state``.
      weights_fn: ``(losses[K], state, presence=None) -> (weights[K], new_state)``
        (the ``presence`` parameter is optional, see above); must be
        jit-compatible. The losses it receives are not differentiated through;
        those of absent tasks are 0.
      shared: leaves to weight; the others receive the plain sum over tasks.
      offset: ``state -> [update leaf per shared leaf]``, a term added to the
        shared leaves' update, independent of the step's gradients
        (:attr:`BalancerSpec.offset`).

    Returns:
      A :class:`Balancer` of kind ``"loss"``.
    """
    aware = takes_presence(weights_fn)

    def checked(losses, state, presence=None):
        losses = _validate.check_losses(losses)
        presence = _presence.check_presence(presence, losses.shape[0])
        if presence is None:
            w, new = weights_fn(losses, state)
        else:
            losses = _presence.zero_absent(losses, presence)
            if aware:
                w, new = weights_fn(losses, state, presence=presence)
            else:
                w, new = weights_fn(losses, state)
        _validate.check_weights_shape(w, losses.shape[0], "weights_fn")
        if presence is not None:
            w = _presence.zero_absent(jnp.asarray(w), presence)
        return w, _state.like(new, state)

    def combine(jac, losses, state, presence=None):
        w, state = checked(jax.lax.stop_gradient(losses), state, presence)
        if presence is not None:
            jac = _zero_absent_leaves(jac, jnp.asarray(presence))
        return _task_tree.combine(_routing.cast_like(w, losses), jac), state

    spec = BalancerSpec(
        "loss", shared, combine, loss_weights=checked, representation=True, offset=offset
    )
    return _make(spec, init)


def gram_balancer(
    init: Callable[[PyTree], Any],
    weights_fn: GramWeightFn,
    *,
    shared: MaskSpec = None,
    gram_mask: MaskSpec = None,
    representation: bool = True,
    diagonal_only: bool = False,
) -> Balancer:
    """Builds a balancer whose update is ``Σ_k w_k J_k`` with ``w = f(G, losses, state)``.

    Presence: with a ``task_presence``, a ``weights_fn`` that has a keyword
    ``presence`` parameter receives the ``[K]`` bool array and must give the
    absent tasks weight 0, solve its problem over the present ones and leave
    their state unchanged (every library method does). A ``weights_fn`` without
    it is *not presence-aware*: it is called as without presence (on the zeroed
    inputs) and only its absent tasks' weights are set to 0 afterwards; its
    problem still spans all ``K`` tasks and its state is updated as it chooses.

    Args:
      init: ``params -> state``.
      weights_fn: ``(G[K, K], losses[K], state, presence=None) -> (weights[K],
        new_state)`` (the ``presence`` parameter is optional, see above). The
        rows and columns of ``G`` and the losses of absent tasks are 0.
      shared: leaves to balance; the others receive the plain sum over tasks.
      gram_mask: a mask over the *params* tree choosing which shared leaves ``G``
        is computed on (``None``: all shared leaves). In representation mode ``G``
        is taken over the whole representation.
      representation: whether the method may run on the representation Jacobian.
      diagonal_only: whether ``weights_fn`` reads only ``diag(G)``; the Gramian
        route then forms just the per-task squared norms
        (:attr:`BalancerSpec.gram_diagonal`).

    Returns:
      A :class:`Balancer` of kind ``"gram"``.
    """
    aware = takes_presence(weights_fn)

    def checked(gram, losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=gram.shape[0])
        presence = _presence.check_presence(presence, gram.shape[0])
        if presence is None:
            w, new = weights_fn(gram, losses, state)
        else:
            gram = _presence.restrict_gram(gram, presence)
            losses = _presence.zero_absent(losses, presence)
            if aware:
                w, new = weights_fn(gram, losses, state, presence=presence)
            else:
                w, new = weights_fn(gram, losses, state)
        _validate.check_weights_shape(w, gram.shape[0], "weights_fn")
        if presence is not None:
            w = _presence.zero_absent(jnp.asarray(w), presence)
        return w, _state.like(new, state)

    def combine(jac, losses, state, presence=None):
        if presence is not None:
            presence = _presence.check_presence(presence, _validate.check_losses(losses).shape[0])
            jac = _zero_absent_leaves(jac, presence)
        w, state = checked(_task_tree.gram(jac), jax.lax.stop_gradient(losses), state, presence)
        return _task_tree.combine(_routing.cast_like(w, losses), jac), state

    spec = BalancerSpec(
        "gram",
        shared,
        combine,
        gram_weights=checked,
        gram_mask=gram_mask,
        representation=representation,
        gram_diagonal=diagonal_only,
    )
    return _make(spec, init)


def jacobian_balancer(
    init: Callable[[PyTree], Any],
    combine_fn: CombineFn,
    *,
    shared: MaskSpec = None,
    representation: bool = True,
) -> Balancer:
    """Builds a balancer from ``combine_fn(jac_leaves, losses, state) -> (update_leaves, state)``.

    ``jac_leaves`` is the list of shared leaves of the task Jacobian, each
    ``[K, ...]``; the result is the list of their balanced updates (task axis
    removed), in the same order. ``combine_fn`` may take a keyword
    ``presence=None`` (a ``[K]`` bool array); the absent tasks' rows of the
    leaves and their losses are 0 when it is called. A ``combine_fn`` without
    that parameter is not presence-aware: it is given the zeroed rows and
    nothing else.

    Returns:
      A :class:`Balancer` of kind ``"jacobian"``.
    """
    aware = takes_presence(combine_fn)

    def checked(leaves, losses, state, presence=None):
        if presence is None:
            out, new = combine_fn(leaves, losses, state)
        else:
            presence = _presence.check_presence(presence, _validate.check_losses(losses).shape[0])
            leaves = _zero_absent_leaves(leaves, presence)
            losses = _presence.zero_absent(losses, presence)
            if aware:
                out, new = combine_fn(leaves, losses, state, presence=presence)
            else:
                out, new = combine_fn(leaves, losses, state)
        return out, _state.like(new, state)

    spec = BalancerSpec("jacobian", shared, checked, representation=representation)
    return _make(spec, init)


def stateless_gram_balancer(
    weights_of_gram: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> Balancer:
    """A Gram balancer with no state but the weights it records.

    Args:
      weights_of_gram: ``(G[K, K], losses[K], presence=None) -> weights[K]``,
        jit-compatible; the ``presence`` parameter is optional (without it the
        absent tasks' weights are set to 0 after the call).
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`Balancer` of kind ``"gram"`` whose state is a
      :class:`~mtl_jax.balancers.WeightsState`.
    """
    _validate.check_num_tasks(num_tasks)
    aware = takes_presence(weights_of_gram)

    def init(params):
        del params
        return _state.init_weights_state(num_tasks)

    def weights_fn(gram, losses, state, presence=None):
        if presence is None:
            w = weights_of_gram(gram, losses)
        elif aware:
            w = _presence.zero_absent(weights_of_gram(gram, losses, presence=presence), presence)
        else:
            w = _presence.zero_absent(weights_of_gram(gram, losses), presence)
        return w, _state.WeightsState(_state.record_weights(state.weights, w))

    return gram_balancer(init, weights_fn, shared=shared)
