"""Pieces every gradient route of the training step shares.

The routes (:mod:`mtl_jax.training._routes` and the Gramian route,
:mod:`mtl_jax.training._gramian`) all normalise the loss function's output
(:func:`with_presence`), sanitise a VJP's saved values under the per-task
non-finite policy (:func:`sanitised`), give the leaves outside ``shared=`` the
plain sum (:func:`honour_shared`) and report the same :class:`RouteOut`. They
sit here, below both, so neither route module imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _task_tree
from mtl_jax.training import _checks

PyTree = Any


class RouteOut(NamedTuple):
    grads: PyTree  # params-shaped balanced gradient
    balancer_state: Any
    losses: jax.Array  # [K]
    aux: Any
    weights: jax.Array  # [K] float32, the applied task weights
    task_finite: jax.Array  # [K] bool: the loss and the per-task gradients the route saw are finite
    presence: jax.Array  # [K] bool: the tasks the loss function said are present
    used: jax.Array  # [K] bool: the tasks balanced (present, and finite under per_task)


def _split_task_losses(out: Any, has_aux: bool, name: str):
    """``name``'s output as ``(losses, presence or None, aux)``; a ``TaskLosses`` is unpacked."""
    tl, aux = None, None
    if has_aux:
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], _presence.TaskLosses):
            tl, aux = out
    elif isinstance(out, _presence.TaskLosses):
        tl = out
    if tl is None:
        losses, aux = _checks.split_losses(out, has_aux, name)
        return losses, None, aux
    losses, _ = _checks.split_losses(tl.losses, False, f"{name} (TaskLosses.losses)")
    presence = _presence.check_presence(
        tl.present, losses.shape[0], name=f"{name}'s TaskLosses.present"
    )
    return losses, presence, aux


def with_presence(fn: Callable | None, has_aux: bool, name: str) -> Callable | None:
    """``fn`` returning ``(losses, (presence, aux))`` whatever form of output it has.

    ``fn`` may return the ``[K]`` losses or a :class:`~mtl_jax.TaskLosses`
    ``(losses, present)`` (``(…, aux)`` with ``has_aux``); ``presence`` is the
    ``[K]`` bool array, or ``None`` for a plain array. Checked at trace time.
    """
    if fn is None:
        return None

    def wrapped(*args):
        losses, presence, aux = _split_task_losses(fn(*args), has_aux, name)
        return losses, (presence, aux)

    return wrapped


def normalised(representation, has_aux: bool):
    """``representation`` with its decoders normalised (:func:`with_presence`)."""
    if representation is None:
        return None
    return type(representation)(
        representation.encode,
        with_presence(representation.decode, has_aux, "representation.decode"),
        with_presence(representation.decode_tasks, has_aux, "representation.decode_tasks"),
    )


def sanitised(vjp_fn: Any, when: jax.Array) -> Any:
    """``vjp_fn`` with its non-finite saved forward values set to 0 where ``when`` is true.

    The residuals of a VJP (the pytree leaves of the object ``jax.vjp`` returns)
    are the forward values its backward pass multiplies cotangents by. With
    them finite, a zero cotangent gives an exact zero, so a task's non-finite
    branch no longer turns the other tasks' gradients into NaN (``0·NaN``).
    """
    leaves, treedef = jax.tree_util.tree_flatten(vjp_fn)

    def clean(x):
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            return x
        return jnp.where(when & ~jnp.isfinite(x), jnp.zeros((), x.dtype), x)

    return jax.tree_util.tree_unflatten(treedef, [clean(x) for x in leaves])


def presence_args(presence: jax.Array | None) -> dict:
    """``{"presence": p}`` for a balancer callable, or ``{}`` when every task is present."""
    return {} if presence is None else {"presence": presence}


def plain_cotangent(used: jax.Array | None, like: jax.Array) -> jax.Array:
    """The cotangent of the plain sum over the tasks taking part (ones without presence)."""
    if used is None:
        return jnp.ones_like(like)
    return used.astype(like.dtype)


def all_true(k: int) -> jax.Array:
    return jnp.ones((k,), bool)


def used_tasks(presence: jax.Array | None, ok: jax.Array | None) -> jax.Array | None:
    """``presence & ok`` where either may be ``None`` (all true)."""
    if ok is None:
        return presence
    return ok if presence is None else presence & ok


def honour_shared(balanced: PyTree, plain_sum: Callable[[], PyTree], mask: PyTree) -> PyTree:
    """Keeps ``balanced`` on the leaves ``mask`` selects and the plain sum elsewhere.

    ``plain_sum`` (the gradient of ``Σ_k L_k``) is only evaluated when some leaf
    is not shared.
    """
    flags = jax.tree_util.tree_leaves(mask)
    if all(flags):
        return balanced
    total = plain_sum()
    return jax.tree_util.tree_map(lambda b, s, m: b if m else s, balanced, total, mask)


def task_finite_rows(jac_leaves: list[jax.Array], k: int) -> jax.Array:
    flags = [jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))) for x in jac_leaves]
    return jnp.all(jnp.stack(flags), axis=0) if flags else jnp.ones((k,), bool)


def effective_weights(jac_leaves: list[jax.Array], update_leaves: list[jax.Array]) -> jax.Array:
    """Least-squares task weights of an update: ``argmin_w ‖Σ_k w_k J_k − u‖``.

    Exact for every method whose update is a weighted sum of the task gradients
    (when the task gradients are linearly independent); for per-coordinate rules
    such as GradDrop it is the closest weighted sum.
    """
    g = _task_tree.gram(jac_leaves)
    k = g.shape[0]
    b = sum(
        jnp.reshape(j, (k, -1)).astype(g.dtype) @ jnp.reshape(u, (-1,)).astype(g.dtype)
        for j, u in zip(jac_leaves, update_leaves)
    )
    return (jnp.linalg.pinv(g, hermitian=True) @ b).astype(jnp.float32)


def recorded_or(state: Any, k: int, fallback: Callable[[], jax.Array]) -> jax.Array:
    recorded = _checks.recorded_weights(state)
    if recorded is not None and recorded.shape == (k,):
        return recorded.astype(jnp.float32)
    return fallback()


def per_task_copies(representation, params, z, batch, has_aux, per_task=False):
    """Heads' gradient of ``Σ_k L_k`` and ``∂L_k/∂z`` for all ``k`` in ONE backward pass.

    ``decode_tasks`` sees one copy of ``z`` per task; loss ``k`` reads only copy
    ``k``, so the gradient of ``Σ_k L_k`` w.r.t. copy ``k`` is ``∂L_k/∂z``. The
    representation is normalised (:func:`with_presence`): the sum runs over the
    present tasks (and, under ``per_task``, those with a finite loss).

    Returns:
      ``(heads' gradient, ∂L_k/∂z [K, ...], losses, (presence, aux), used)``.
    """
    name = "representation.decode"
    shape = jax.eval_shape(lambda zz: representation.decode(params, zz, batch), z)
    k = shape[0].shape[0]
    zs = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (k, *jnp.shape(x))), z)
    name = "representation.decode_tasks"
    dec = lambda p, zz: representation.decode_tasks(p, zz, batch)
    losses, dec_vjp, (presence, aux) = jax.vjp(dec, params, zs, has_aux=True)
    if losses.shape != (k,):
        raise ValueError(
            f"{name} returned losses of shape {tuple(losses.shape)}; decode returns ({k},)"
        )
    loss_ok = jnp.isfinite(losses)
    used = used_tasks(presence, loss_ok if per_task else None)
    if per_task:
        dec_vjp = sanitised(dec_vjp, ~jnp.all(loss_ok))
    g_heads, jz = dec_vjp(plain_cotangent(used, losses))
    return g_heads, jz, losses, (presence, aux), used
