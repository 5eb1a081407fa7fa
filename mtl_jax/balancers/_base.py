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

__all__ = [
    "Balancer",
    "BalancerSpec",
    "check_balancer",
    "gram_balancer",
    "jacobian_balancer",
    "loss_balancer",
    "task_weights",
    "validate_task_inputs",
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
    """

    kind: Kind
    shared: MaskSpec
    combine: CombineFn
    loss_weights: LossWeightFn | None = None
    gram_weights: GramWeightFn | None = None
    gram_mask: MaskSpec = None
    representation: bool = False
    gram_diagonal: bool = False


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


def _route(
    spec: BalancerSpec,
    task_grads: PyTree,
    state: Any,
    params: PyTree | None,
    task_losses: Any,
    task_presence: Any = None,
) -> tuple[PyTree, Any]:
    k = validate_task_inputs(task_grads, params, task_losses)
    presence = _presence.check_presence(task_presence, k)
    losses = jnp.asarray(task_losses)
    ref = _shape_tree(task_grads) if params is None else params
    treedef = jax.tree_util.tree_structure(task_grads)
    leaves = jax.tree_util.tree_leaves(task_grads)
    flags = _resolve(spec.shared, ref, "shared")
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
        gflags = _resolve(spec.gram_mask, ref, "gram_mask")
        sel = [x for x, m, gm in zip(leaves, flags, gflags) if m and gm]
        if not sel:
            raise ValueError("the Gram mask selects no shared leaf")
        g = _task_tree.gram(sel)
        w, state = spec.gram_weights(g, jax.lax.stop_gradient(losses), state, **extra)
        balanced = _task_tree.combine(_cast_like(w, losses), shared)
    else:
        balanced, state = spec.combine(shared, losses, state, **extra)
    it = iter(balanced)
    out = [next(it) if m else _task_tree.sum_leading(x) for x, m in zip(leaves, flags)]
    return jax.tree_util.tree_unflatten(treedef, out), state


def _make(spec: BalancerSpec, init: Callable[[PyTree], Any]) -> Balancer:
    def update_fn(task_grads, state, params=None, *, task_losses, task_presence=None, **extra_args):
        del extra_args
        return _route(spec, task_grads, state, params, task_losses, task_presence)

    return Balancer(init, update_fn, spec)


def _cast_like(w: jax.Array, losses: jax.Array) -> jax.Array:
    return jnp.asarray(w, dtype=jnp.promote_types(losses.dtype, jnp.float32))


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
    init: Callable[[PyTree], Any], weights_fn: LossWeightFn, *, shared: MaskSpec = None
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
        return w, like(new, state)

    def combine(jac, losses, state, presence=None):
        w, state = checked(jax.lax.stop_gradient(losses), state, presence)
        if presence is not None:
            jac = _zero_absent_leaves(jac, jnp.asarray(presence))
        return _task_tree.combine(_cast_like(w, losses), jac), state

    spec = BalancerSpec("loss", shared, combine, loss_weights=checked, representation=True)
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
        return w, like(new, state)

    def combine(jac, losses, state, presence=None):
        if presence is not None:
            presence = _presence.check_presence(presence, _validate.check_losses(losses).shape[0])
            jac = _zero_absent_leaves(jac, presence)
        w, state = checked(_task_tree.gram(jac), jax.lax.stop_gradient(losses), state, presence)
        return _task_tree.combine(_cast_like(w, losses), jac), state

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
        return out, like(new, state)

    spec = BalancerSpec("jacobian", shared, checked, representation=representation)
    return _make(spec, init)


# --------------------------------------------------------------------------- state


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


# --------------------------------------------------------------------------- checks


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
      A :class:`Balancer` of kind ``"gram"`` whose state is a :class:`WeightsState`.
    """
    _validate.check_num_tasks(num_tasks)
    aware = takes_presence(weights_of_gram)

    def init(params):
        del params
        return init_weights_state(num_tasks)

    def weights_fn(gram, losses, state, presence=None):
        if presence is None:
            w = weights_of_gram(gram, losses)
        elif aware:
            w = _presence.zero_absent(weights_of_gram(gram, losses, presence=presence), presence)
        else:
            w = _presence.zero_absent(weights_of_gram(gram, losses), presence)
        return w, WeightsState(record_weights(state.weights, w))

    return gram_balancer(init, weights_fn, shared=shared)
