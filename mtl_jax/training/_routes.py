"""The loss, Jacobian and representation routes of the training step.

The Gramian route is :func:`mtl_jax.training._gramian.gramian_route`; the pieces
all routes share are in :mod:`mtl_jax.training._route_common`, and every route
reads the masks from the step's plan (:mod:`mtl_jax.training._plan`).

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

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from mtl_jax import _presence, _task_tree
from mtl_jax._jacobian import task_map, value_and_jacobian
from mtl_jax.balancers._routing import add_offset
from mtl_jax.training import _checks
from mtl_jax.training._plan import StepPlan
from mtl_jax.training._route_common import (
    RouteOut,
    all_true,
    effective_weights,
    honour_shared,
    normalised,
    per_task_copies,
    plain_cotangent,
    presence_args,
    recorded_or,
    sanitised,
    task_finite_rows,
    used_tasks,
    with_presence,
)

PyTree = Any


def loss_route(loss_fn, plan: StepPlan, params, bal_state, batch, *, name="loss_fn"):
    """``w = f(losses)``, then one backward pass with cotangent ``w``.

    ``loss_fn`` may return a ``TaskLosses`` (:func:`with_presence`). Under ``per_task`` a task
    with a non-finite loss is absent; a non-finite gradient of a finite loss
    cannot be attributed in one backward pass (the step then skips).
    """
    spec, per_task = plan.spec, plan.per_task
    state_in = bal_state
    loss_fn = with_presence(loss_fn, plan.has_aux, name)
    losses, vjp_fn, (presence, aux) = jax.vjp(lambda p: loss_fn(p, batch), params, has_aux=True)
    k = losses.shape[0]
    _checks.check_state_num_tasks(k, bal_state)
    loss_ok = jnp.isfinite(losses)
    used = used_tasks(presence, loss_ok if per_task else None)
    if per_task:
        vjp_fn = sanitised(vjp_fn, ~jnp.all(loss_ok))
    w, bal_state = spec.loss_weights(
        jax.lax.stop_gradient(losses), bal_state, **presence_args(used)
    )
    w = jnp.asarray(w, jnp.promote_types(losses.dtype, jnp.float32))
    (g,) = vjp_fn(w.astype(losses.dtype))
    g = honour_shared(g, lambda: vjp_fn(plain_cotangent(used, losses))[0], plan.shared_tree())
    if spec.offset is not None:  # a term no step gradient enters (FORUM's direction)
        g_leaves = add_offset(spec, state_in, jax.tree_util.tree_leaves(g), plan.shared)
        g = jax.tree_util.tree_unflatten(plan.treedef, g_leaves)
    present = all_true(k) if presence is None else presence
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


def jacobian_route(loss_fn, plan: StepPlan, params, bal_state, batch):
    """The full task Jacobian w.r.t. the parameters, then the balancer.

    ``loss_fn`` may return a ``TaskLosses`` (:func:`with_presence`). The rows of
    the absent (and, under ``per_task``, non-finite) tasks are zeroed with
    ``where`` before the balancer sees them.
    """
    per_task, chunk_size = plan.per_task, plan.chunk_size
    loss_fn = with_presence(loss_fn, plan.has_aux, "loss_fn")
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
    task_finite = jnp.isfinite(losses) & task_finite_rows(jac_l, k)
    used = used_tasks(presence, task_finite if per_task else None)
    if used is not None:
        jac_l = [_presence.zero_absent(x, used) for x in jac_l]
        jac = jax.tree_util.tree_unflatten(treedef, jac_l)
    g, bal_state = plan.balancer.update(
        jac,
        bal_state,
        params,
        task_losses=losses,
        task_presence=used,
        shared_flags=plan.shared,
        gram_flags=plan.gram,
    )
    mask = plan.shared
    g_l = jax.tree_util.tree_leaves(g)
    shared_j = [x for x, m in zip(jac_l, mask) if m]
    shared_g = [x for x, m in zip(g_l, mask) if m]
    w = recorded_or(bal_state, k, lambda: effective_weights(shared_j, shared_g))
    present = all_true(k) if presence is None else presence
    return RouteOut(
        g, bal_state, losses, aux, w, task_finite, present, present if used is None else used
    )


def _explicit_mesh(tree: PyTree):
    """The abstract mesh of ``tree``'s leaves if it has an ``Explicit`` axis, else None."""
    for x in jax.tree_util.tree_leaves(tree):
        sharding = getattr(jax.typeof(x), "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if mesh is not None and not mesh.empty and AxisType.Explicit in mesh.axis_types:
            return mesh
    return None


def representation_route(loss_fn, plan: StepPlan, representation, params, bal_state, batch):
    """Balances the per-task gradients w.r.t. ``z = encode(params, batch)`` (MGDA-UB).

    ``representation``'s decoders may return a ``TaskLosses`` (:func:`with_presence`).
    """
    spec, has_aux, per_task = plan.spec, plan.has_aux, plan.per_task
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
        return loss_route(composed, plan, params, bal_state, batch, name="decode")
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
            plain_cotangent(used_tasks(presence, loss_ok if per_task else None), losses)
        )
        # K backward passes through the whole decoder.
        jz = jax.vmap(lambda e: dec_vjp(e)[1])(jnp.eye(k, dtype=losses.dtype))
    else:
        g_heads, jz, losses, (presence, aux), _ = per_task_copies(
            representation, params, z, batch, True, per_task
        )
        k = losses.shape[0]
        _checks.check_state_num_tasks(k, bal_state)
    z_leaves, z_def = jax.tree_util.tree_flatten(jz)
    task_finite = jnp.isfinite(losses) & task_finite_rows(z_leaves, k)
    used = used_tasks(presence, task_finite if per_task else None)
    if used is not None:
        z_leaves = [_presence.zero_absent(x, used) for x in z_leaves]

    def balance(z_leaves, losses, bal_state):
        cot, new_state = spec.combine(z_leaves, losses, bal_state, **presence_args(used))
        w = recorded_or(new_state, k, lambda: effective_weights(z_leaves, cot))
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

    g = honour_shared(g, plain_sum, plan.shared_tree())
    present = all_true(k) if presence is None else presence
    return RouteOut(
        g, bal_state, losses, aux, w, task_finite, present, present if used is None else used
    )
