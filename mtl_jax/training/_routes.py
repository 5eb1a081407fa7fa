"""The gradient routes of the training step: loss, Gramian, Jacobian, representation.

Each route returns the balanced gradient (params-shaped), the new balancer
state, the losses, the aux value, the applied task weights ``[K]``, a per-task
flag saying whether the loss and the per-task gradients the route saw are
finite, the tasks the loss function said are present and the tasks the route
balanced.

**Task presence.** Each route normalises its loss function with
:func:`with_presence`, which returns ``(losses, (presence, aux))``, where
``presence`` is the ``[K]`` bool array of a :class:`~mtl_jax.TaskLosses` the
user's function returned (``None`` when it returned a plain array). Every route
hands ``presence`` to the balancer, zeroes an absent task's per-task gradient
with ``where`` (a NaN there does not leak through its 0 weight) and gives the
task-specific (non-shared) leaves the plain sum over the *present* tasks, so
an absent task's head gets no gradient. The step on ``K`` tasks with a subset
``S`` present is then the balancer's step on the ``|S|`` present tasks.

**Per-task non-finite policy** (``per_task=True``, ``on_nonfinite="skip_task"``).
A task whose loss or per-task gradient is non-finite is treated as absent for
this step. A per-task gradient formed by a VJP of the shared forward pass with
cotangent ``e_k`` is not isolated from the other tasks: a NaN in task ``j``'s
branch (a NaN label, say) meets the zero cotangent of ``j`` and ``0·NaN = NaN``
reaches the shared trunk, so every task's gradient would be NaN. When some loss
is non-finite the routes therefore take the backward passes from a VJP whose
saved forward values (its residuals) have their non-finite entries replaced by
0 (:func:`sanitised`): a task whose own backward path holds only finite values
gets its exact gradient, and the bad task's contribution is 0 instead of NaN.
The assumption is that the non-finite values live in the bad task's own branch
(its head and loss); a non-finite shared activation makes every loss non-finite,
and then no task is left and the step is skipped.

One rule serves every route for the ``shared=`` mask: the leaves it selects get
the balanced gradient; every other leaf gets the plain sum over tasks, the
gradient of ``Σ_k L_k`` (:func:`honour_shared`). Representation mode
(MGDA-UB, Sener & Koltun 2018, https://arxiv.org/abs/1810.04650) balances the
gradients w.r.t. the shared representation ``z``; the decoder's (task-specific)
parameters get the plain sum for Gram and Jacobian balancers, as in the paper.
For a loss-only balancer the weights do not depend on any gradient, so its
representation route is the loss route on ``decode(encode(·))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from mtl_jax import _presence, _task_tree
from mtl_jax._jacobian import task_map, value_and_jacobian
from mtl_jax.balancers._base import Balancer
from mtl_jax.training import _checks, _gramian

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


def _all_true(k: int) -> jax.Array:
    return jnp.ones((k,), bool)


def _used(presence: jax.Array | None, ok: jax.Array | None) -> jax.Array | None:
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


def _task_finite(jac_leaves: list[jax.Array], k: int) -> jax.Array:
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


def _recorded_or(state: Any, k: int, fallback: Callable[[], jax.Array]) -> jax.Array:
    recorded = _checks.recorded_weights(state)
    if recorded is not None and recorded.shape == (k,):
        return recorded.astype(jnp.float32)
    return fallback()


def loss_route(
    loss_fn,
    balancer: Balancer,
    params,
    bal_state,
    batch,
    *,
    has_aux,
    name="loss_fn",
    per_task=False,
):
    """``w = f(losses)``, then one backward pass with cotangent ``w``.

    ``loss_fn`` may return a ``TaskLosses`` (:func:`with_presence`). Under ``per_task`` a task
    with a non-finite loss is absent; a non-finite gradient of a finite loss
    cannot be attributed in one backward pass (the step then skips).
    """
    spec = balancer.spec
    loss_fn = with_presence(loss_fn, has_aux, name)
    losses, vjp_fn, (presence, aux) = jax.vjp(lambda p: loss_fn(p, batch), params, has_aux=True)
    k = losses.shape[0]
    _checks.check_state_num_tasks(k, bal_state)
    loss_ok = jnp.isfinite(losses)
    used = _used(presence, loss_ok if per_task else None)
    if per_task:
        vjp_fn = sanitised(vjp_fn, ~jnp.all(loss_ok))
    w, bal_state = spec.loss_weights(
        jax.lax.stop_gradient(losses), bal_state, **presence_args(used)
    )
    w = jnp.asarray(w, jnp.promote_types(losses.dtype, jnp.float32))
    (g,) = vjp_fn(w.astype(losses.dtype))
    mask = _task_tree.resolve_mask(spec.shared, params)
    g = honour_shared(g, lambda: vjp_fn(plain_cotangent(used, losses))[0], mask)
    present = _all_true(k) if presence is None else presence
    return RouteOut(
        g,
        bal_state,
        losses,
        aux,
        w.astype(jnp.float32),
        loss_ok,
        present,
        present if used is None else used,
    )


def jacobian_route(
    loss_fn, balancer: Balancer, params, bal_state, batch, *, has_aux, chunk_size, per_task=False
):
    """The full task Jacobian w.r.t. the parameters, then the balancer.

    ``loss_fn`` may return a ``TaskLosses`` (:func:`with_presence`). The rows of
    the absent (and, under ``per_task``, non-finite) tasks are zeroed with
    ``where`` before the balancer sees them.
    """
    loss_fn = with_presence(loss_fn, has_aux, "loss_fn")
    if per_task:
        # Own VJPs, so that a non-finite loss's branch can be sanitised.
        losses, vjp_fn, (presence, aux) = jax.vjp(lambda p: loss_fn(p, batch), params, has_aux=True)
        k = losses.shape[0]
        vjp_fn = sanitised(vjp_fn, ~jnp.all(jnp.isfinite(losses)))
        jac = task_map(lambda e: vjp_fn(e)[0], k, losses.dtype, chunk_size)
    else:
        value, jac = value_and_jacobian(loss_fn, has_aux=True, chunk_size=chunk_size)(params, batch)
        losses, (presence, aux) = value
        k = losses.shape[0]
    _checks.check_state_num_tasks(k, bal_state)
    jac_l, treedef = jax.tree_util.tree_flatten(jac)
    task_finite = jnp.isfinite(losses) & _task_finite(jac_l, k)
    used = _used(presence, task_finite if per_task else None)
    if used is not None:
        jac_l = [_presence.zero_absent(x, used) for x in jac_l]
        jac = jax.tree_util.tree_unflatten(treedef, jac_l)
    g, bal_state = balancer.update(jac, bal_state, params, task_losses=losses, task_presence=used)
    mask = jax.tree_util.tree_leaves(_task_tree.resolve_mask(balancer.spec.shared, params))
    g_l = jax.tree_util.tree_leaves(g)
    shared_j = [x for x, m in zip(jac_l, mask) if m]
    shared_g = [x for x, m in zip(g_l, mask) if m]
    w = _recorded_or(bal_state, k, lambda: effective_weights(shared_j, shared_g))
    present = _all_true(k) if presence is None else presence
    return RouteOut(
        g, bal_state, losses, aux, w, task_finite, present, present if used is None else used
    )


def gramian_route(
    loss_fn,
    balancer: Balancer,
    params,
    bal_state,
    batch,
    *,
    has_aux,
    chunk_size,
    representation=None,
    per_task=False,
):
    """``G`` over the Gram leaves, ``w = f(G)``, ``Σ_k w_k ∇L_k`` (see ``_gramian``).

    With a ``representation`` that has ``decode_tasks`` (and whose
    ``decode_tasks`` reads no shared leaf), the per-task backward passes run
    through the encoder only (:func:`mtl_jax.training._gramian.gramian_route`).
    ``loss_fn`` and ``representation``'s decoders may return a ``TaskLosses``
    (:func:`with_presence`).
    """
    return RouteOut(
        *_gramian.gramian_route(
            with_presence(loss_fn, has_aux, "loss_fn"),
            balancer,
            params,
            bal_state,
            batch,
            has_aux=True,
            chunk_size=chunk_size,
            representation=normalised(representation, has_aux),
            per_task_copies=_per_task_copies,
            per_task=per_task,
        )
    )


def _explicit_mesh(tree: PyTree):
    """The abstract mesh of ``tree``'s leaves if it has an ``Explicit`` axis, else None."""
    for x in jax.tree_util.tree_leaves(tree):
        sharding = getattr(jax.typeof(x), "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if mesh is not None and not mesh.empty and AxisType.Explicit in mesh.axis_types:
            return mesh
    return None


def _per_task_copies(representation, params, z, batch, has_aux, per_task=False):
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
    used = _used(presence, loss_ok if per_task else None)
    if per_task:
        dec_vjp = sanitised(dec_vjp, ~jnp.all(loss_ok))
    g_heads, jz = dec_vjp(plain_cotangent(used, losses))
    return g_heads, jz, losses, (presence, aux), used


def representation_route(
    loss_fn,
    balancer: Balancer,
    representation,
    params,
    bal_state,
    batch,
    *,
    has_aux,
    per_task=False,
):
    """Balances the per-task gradients w.r.t. ``z = encode(params, batch)`` (MGDA-UB).

    ``representation``'s decoders may return a ``TaskLosses`` (:func:`with_presence`).
    """
    spec = balancer.spec
    if spec.kind == "loss":
        raw = representation.decode
        composed = lambda p, b: raw(p, representation.encode(p, b), b)
        _checks.check_decode_uses_z(
            normalised(representation, has_aux).decode,
            params,
            jax.eval_shape(representation.encode, params, batch),
            batch,
            True,
        )
        return loss_route(
            composed,
            balancer,
            params,
            bal_state,
            batch,
            has_aux=has_aux,
            name="decode",
            per_task=per_task,
        )
    representation = normalised(representation, has_aux)
    encode, decode = representation.encode, representation.decode
    # Shapes only: an un-jitted step would otherwise run the encoder twice.
    z = jax.eval_shape(encode, params, batch)
    _checks.check_decode_uses_z(decode, params, z, batch, True)
    z, enc_vjp = jax.vjp(lambda p: encode(p, batch), params)
    if representation.decode_tasks is None:
        dec = lambda p, zz: decode(p, zz, batch)
        losses, dec_vjp, (presence, aux) = jax.vjp(dec, params, z, has_aux=True)
        k = losses.shape[0]
        _checks.check_state_num_tasks(k, bal_state)
        loss_ok = jnp.isfinite(losses)
        if per_task:
            dec_vjp = sanitised(dec_vjp, ~jnp.all(loss_ok))
        g_heads, _ = dec_vjp(
            plain_cotangent(_used(presence, loss_ok if per_task else None), losses)
        )
        # K backward passes through the whole decoder.
        jz = jax.vmap(lambda e: dec_vjp(e)[1])(jnp.eye(k, dtype=losses.dtype))
    else:
        g_heads, jz, losses, (presence, aux), _ = _per_task_copies(
            representation, params, z, batch, True, per_task
        )
        k = losses.shape[0]
        _checks.check_state_num_tasks(k, bal_state)
    z_leaves, z_def = jax.tree_util.tree_flatten(jz)
    task_finite = jnp.isfinite(losses) & _task_finite(z_leaves, k)
    used = _used(presence, task_finite if per_task else None)
    if used is not None:
        z_leaves = [_presence.zero_absent(x, used) for x in z_leaves]

    def balance(z_leaves, losses, bal_state):
        cot, new_state = spec.combine(z_leaves, losses, bal_state, **presence_args(used))
        w = _recorded_or(new_state, k, lambda: effective_weights(z_leaves, cot))
        return cot, new_state, w

    mesh = _explicit_mesh(z_leaves)
    if mesh is not None:
        # Under Explicit sharding the Gram matrix contracts over the sharded batch
        # axis, which needs an output sharding; let XLA place the reduction.
        replicated = NamedSharding(mesh, P())
        z_shardings = [jax.typeof(x[0]).sharding for x in z_leaves]
        balance = jax.sharding.auto_axes(
            balance, out_sharding=(z_shardings, replicated, replicated)
        )
    z_cot_leaves, bal_state, w = balance(z_leaves, losses, bal_state)
    z_cot = jax.tree_util.tree_unflatten(z_def, z_cot_leaves)
    (g_enc,) = enc_vjp(z_cot)
    g = jax.tree_util.tree_map(jnp.add, g_enc, g_heads)

    def plain_sum():
        summed = jax.tree_util.tree_unflatten(z_def, [_task_tree.sum_leading(x) for x in z_leaves])
        (g_enc_sum,) = enc_vjp(summed)
        return jax.tree_util.tree_map(jnp.add, g_enc_sum, g_heads)

    g = honour_shared(g, plain_sum, _task_tree.resolve_mask(spec.shared, params))
    present = _all_true(k) if presence is None else presence
    return RouteOut(
        g, bal_state, losses, aux, w, task_finite, present, present if used is None else used
    )
