"""The Gramian route: full-parameter balancing from ``G = J Jᵀ``, for Gram balancers.

A Gram balancer (``spec.kind == "gram"``: MGDA, PCGrad, UPGrad, IMTL-G, CAGrad, ...)
needs from the task Jacobian only its Gram matrix over the shared leaves its
weights look at (``spec.gram_mask``), and its update on the shared leaves is the
weighted sum ``Σ_k w_k ∇L_k``. This route therefore

1. runs the forward pass once and records its VJP;
2. forms the per-task gradients of the *Gram leaves only* (the shared leaves
   selected by ``gram_mask``), ``chunk_size`` tasks at a time (one by default):
   each chunk is a VJP with cotangents ``e_k`` of the one recorded forward pass,
   the chunks run one after another, so at most one chunk of per-task backward
   intermediates
   (activation gradients of shape ``[chunk, batch, ...]``, which dominate the
   memory of a convolutional net, far more than ``J``) is live at a time.
   Gradients of the other leaves are never formed for individual tasks (the
   backward pass below the lowest Gram leaf is pruned by the compiler: GradNorm's
   one-layer Gram costs the backward pass down to that layer only);
3. contracts ``G = Σ_leaves J_leaf J_leafᵀ`` and solves ``w = f(G, losses, state)``
   with the balancer's ``gram_weights``;
4. forms the update: when the Gram leaves are all the shared leaves, as
   ``wᵀJ`` from the per-task gradients already held; otherwise by one VJP with
   cotangent ``w`` (``∇ Σ_k w_k L_k``) -- never through the balancer's
   Jacobian-space ``update``. The other leaves get the plain sum ``∇ Σ_k L_k``.

A balancer whose weights read only ``diag(G)`` (DB-MTL, GradNorm:
:func:`diagonal_only`) gets ``diag(G)`` without the ``K × K`` contraction (``K·P``
instead of ``K²·P`` multiply-adds). When its update is read from the per-task
gradients (Gram leaves = shared leaves: DB-MTL) they are still held for ``wᵀJ``,
which saves a backward pass; otherwise (GradNorm's one layer) each task's
gradient is reduced to its squared norm as soon as it is formed and never stacked.

Given a :class:`~mtl_jax.training.Representation` with ``decode_tasks`` that
reads no shared leaf, steps 1--2 split at the representation ``z``: one backward
pass through the heads gives every ``∂L_k/∂z``, and the per-task VJPs run
through the encoder only (:func:`gramian_route`).

The result equals the Jacobian route's (``balancer.update`` on the full task
Jacobian) up to float reordering. Reference: the Gramian-based Jacobian descent
of Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization" (2024),
https://arxiv.org/abs/2406.16232 (torchjd's ``autogram``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _task_tree
from mtl_jax._jacobian import task_map
from mtl_jax.balancers._base import Balancer
from mtl_jax.training import _checks
from mtl_jax.training._plan import StepPlan
from mtl_jax.training._route_common import (
    RouteOut,
    normalised,
    per_task_copies,
    sanitised,
    with_presence,
)

PyTree = Any

# Tasks per chunk when the step is built with chunk_size=None: one VJP per task
# (see _jacobian.task_map; measured fastest and smallest on W1 conv-hps).
DEFAULT_CHUNK = 1


def _sq_norms(jac: list[jax.Array]) -> jax.Array:
    """``‖J_k‖²`` over the leaves, ``[K]``, accumulated in float32."""
    k = jac[0].shape[0]
    return sum(
        jnp.sum(jnp.square(jnp.reshape(x, (k, -1)).astype(jnp.float32)), axis=1) for x in jac
    )


def diagonal_only(balancer: Balancer) -> bool:
    """Whether ``balancer``'s Gram weights read only ``diag(G)`` (per-task norms).

    A balancer says so in its spec (``gram_balancer(..., diagonal_only=True)``,
    :attr:`~mtl_jax.balancers.BalancerSpec.gram_diagonal`: DB-MTL, GradNorm). The
    Gramian route then forms only the per-task squared norms (see the module
    docstring).
    """
    return balancer.spec.gram_diagonal


def reads_leaves(fn, params, *args) -> list[bool]:
    """For each leaf of ``params``, whether ``fn(params, *args)`` reads it (trace time).

    Conservative: a leaf counts as read when any operation of ``fn``'s jaxpr (or
    its outputs) takes it, whether or not that operation reaches the result.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    closed = jax.make_jaxpr(lambda ls, *a: fn(jax.tree_util.tree_unflatten(treedef, ls), *a))(
        leaves, *args
    )
    jaxpr = closed.jaxpr
    used = {id(v) for eqn in jaxpr.eqns for v in eqn.invars}
    used |= {id(v) for v in jaxpr.outvars}
    return [id(v) in used for v in jaxpr.invars[: len(leaves)]]


def _mixer(tasks: PyTree, finite: jax.Array):
    """``e -> Σ_k e_k tasks[k]`` over the leading task axis, as one dot per leaf.

    The dot runs on a copy of ``tasks`` with non-finite entries zeroed, so a
    non-finite ``tasks[j]`` does not leak into another task's cotangent (``0·inf``);
    a result with ``e_j ≠ 0`` for a task whose ``finite[j]`` is false is NaN instead.
    """
    safe = jax.tree_util.tree_map(lambda x: jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x)), tasks)

    def mix(e):
        bad = jnp.any((e != 0) & ~finite)
        return jax.tree_util.tree_map(
            lambda x: (
                jnp.tensordot(e.astype(x.dtype), x, axes=1)
                + jnp.where(bad, jnp.nan, 0.0).astype(x.dtype)
            ),
            safe,
        )

    return mix


def split_applies(representation, plan: StepPlan, params, batch, has_aux: bool) -> bool:
    """Whether the Gramian route may split at ``representation``'s ``z`` (trace time).

    It may when ``representation.decode_tasks`` is given and reads none of the
    shared leaves (``plan.shared``): then a shared leaf's per-task gradient
    flows through ``z`` only, ``∇_θ L_k = (∂z/∂θ)ᵀ ∂L_k/∂z``.
    """
    if representation is None or representation.decode_tasks is None:
        return False
    shared = plan.shared
    z = jax.eval_shape(representation.encode, params, batch)
    out = jax.eval_shape(representation.decode, params, z, batch)  # K, from shapes only
    out = out[0] if has_aux else out
    k = (out.losses if isinstance(out, _presence.TaskLosses) else out).shape[0]
    zs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((k, *x.shape), x.dtype), z)
    reads = reads_leaves(representation.decode_tasks, params, zs, batch)
    return not any(r and s for r, s in zip(reads, shared))


def gramian_route(
    loss_fn, plan: StepPlan, params, bal_state, batch, *, representation=None
) -> RouteOut:
    """``G`` over the Gram leaves by chunked per-task VJPs, ``w = f(G)``, ``Σ_k w_k ∇L_k``.

    **Split at the representation.** When ``representation`` (a
    :class:`~mtl_jax.training.Representation`) has ``decode_tasks`` and
    ``decode_tasks`` reads none of the shared leaves (checked on its jaxpr at
    trace time, :func:`split_applies`), the route does not backpropagate each
    task through the whole model (all ``K`` heads, every time) but

    1. runs ``z = encode(params, batch)`` once and records its VJP;
    2. takes every ``∂L_k/∂z`` and the heads' plain-sum gradient from ONE
       backward pass through ``decode_tasks`` (as representation mode does);
    3. runs ``K`` backward passes through the encoder only, with cotangents
       ``∂L_k/∂z``, chunked and chained as above (:func:`~mtl_jax._jacobian.task_map`):
       ``∇_θ L_k = (∂z/∂θ)ᵀ ∂L_k/∂z`` on the Gram leaves;
    4. ``G``, ``w`` and the update as below (a shared leaf outside the Gram leaves
       gets one encoder VJP with cotangent ``Σ_k w_k ∂L_k/∂z``; the other leaves
       get the heads' gradient plus the encoder's, ``∇ Σ_k L_k``).

    Same result up to float rounding (``loss_fn`` itself is then not called; the
    losses and aux are ``decode_tasks``'). When ``decode_tasks`` reads a shared
    leaf, its direct contribution to that leaf's per-task gradients would need
    ``K`` backward passes through the heads: the route then runs unsplit, on
    ``loss_fn``. A ``decode_tasks`` that breaks its contract (loss ``k`` reads
    ``zs`` only through ``zs[k]``) gives wrong gradients, as in representation mode.

    Args:
      loss_fn: ``(params, batch) -> losses[K]`` (or ``(losses, aux)`` with
        ``plan.has_aux``), or a :class:`~mtl_jax.TaskLosses` in place of the losses.
      plan: the step's :class:`~mtl_jax.training._plan.StepPlan` (a Gram
        balancer, its shared and Gram leaves, ``chunk_size``: tasks per chunk of
        per-task VJPs, ``None`` for ``DEFAULT_CHUNK``; ``per_task``: a task whose
        loss or Gram-leaf gradient is non-finite is treated as absent).
      params, bal_state, batch: the step's inputs.
      representation: optional encoder/decoder split (see above).

    ``loss_fn`` and the representation's functions are normalised to return
    ``(losses, (presence, aux))`` (:func:`~mtl_jax.training._route_common.with_presence`);
    ``presence`` (a ``[K]`` bool array or ``None``) is handed to the balancer's
    ``gram_weights``, the rows of the absent tasks are zeroed with ``where``
    before ``G`` and ``wᵀJ`` are formed, and the plain sum of the non-shared
    leaves runs over the present tasks.

    Returns:
      A :class:`~mtl_jax.training._route_common.RouteOut`: the update, the new
      balancer state, the losses, aux, the applied weights ``[K]`` (the
      balancer's recorded weights if it records ``[K]`` weights, else ``w``),
      the per-task finiteness of the losses and the Gram leaves' gradients, the
      presence the loss function gave (all true if none) and the tasks balanced.
    """
    spec, per_task, chunk_size = plan.spec, plan.per_task, plan.chunk_size
    if spec.kind != "gram" or spec.gram_weights is None:
        raise ValueError(f"the Gramian route needs a Gram balancer; this one is {spec.kind!r}")
    loss_fn = with_presence(loss_fn, plan.has_aux, "loss_fn")
    representation = normalised(representation, plan.has_aux)
    split = split_applies(representation, plan, params, batch, True)
    if split:
        z, enc_vjp = jax.vjp(lambda p: representation.encode(p, batch), params)
        g_heads, jz, losses, (presence, aux), used_heads = per_task_copies(
            representation, params, z, batch, True, per_task
        )
        z_finite = jnp.all(
            jnp.stack(
                [
                    jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))
                    for x in jax.tree_util.tree_leaves(jz)
                ]
            ),
            axis=0,
        )

        mix = _mixer(jz, z_finite)

        def backward(e):  # Σ_k e_k ∇L_k, through the encoder only
            return enc_vjp(mix(e))[0]

        def plain(cot):  # ∇ Σ_k L_k: the heads' part plus the encoder's
            # The heads' part was taken over the present tasks with a finite loss.
            (g_enc,) = enc_vjp(mix(cot))
            return jax.tree_util.tree_map(jnp.add, g_enc, g_heads)

    else:
        losses, vjp_fn, (presence, aux) = jax.vjp(lambda p: loss_fn(p, batch), params, has_aux=True)
        z_finite = None
        if per_task:
            vjp_fn = sanitised(vjp_fn, ~jnp.all(jnp.isfinite(losses)))

        def backward(e):
            return vjp_fn(e.astype(losses.dtype))[0]

        def plain(cot):
            return vjp_fn(cot)[0]

    k = losses.shape[0]
    _checks.check_state_num_tasks(k, bal_state)

    treedef = jax.tree_util.tree_structure(params)
    shared = plan.shared
    if not any(shared):
        raise ValueError("shared= selects no leaf of the parameters: nothing to balance")
    sel = [i for i, g in enumerate(plan.gram) if g]
    if not sel:
        raise ValueError("the Gram mask selects no shared leaf")

    def rows(e):
        grads = jax.tree_util.tree_leaves(backward(e))
        return [grads[i] for i in sel]

    chunk = DEFAULT_CHUNK if chunk_size is None else chunk_size
    n = treedef.num_leaves
    from_jac = sel == [i for i in range(n) if shared[i]]  # the update is wᵀJ
    diagonal = spec.gram_diagonal
    if diagonal and not from_jac:
        # The update needs a VJP with cotangent w anyway: each task's gradient is
        # reduced to its squared norm (and a finiteness flag) as soon as it is
        # formed; J is never stacked and G = diag(‖∇L_k‖²).
        def sq_norm(e):
            leaves = rows(e)
            sq = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
            return sq, jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

        sq, rows_ok = task_map(sq_norm, k, losses.dtype, chunk)  # [K], [K]
        jac = None
    else:
        jac = task_map(rows, k, losses.dtype, chunk)  # Gram leaves, each [K, *leaf]
        flags = [jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))) for x in jac]
        rows_ok = jnp.all(jnp.stack(flags), axis=0)
    task_finite = jnp.isfinite(losses) & rows_ok
    if z_finite is not None:
        task_finite = task_finite & z_finite
    used = presence
    if per_task:
        used = task_finite if presence is None else presence & task_finite
    if jac is None:
        gram = jnp.diag(sq if used is None else jnp.where(used, sq, 0.0))
    else:
        if used is not None:
            # where, not a 0 weight: NaN·0 = NaN.
            jac = [_presence.zero_absent(x, used) for x in jac]
        # diag(G) alone is K·P multiply-adds instead of the K²·P of the contraction.
        gram = jnp.diag(_sq_norms(jac)) if diagonal else _task_tree.gram(jac)
    extra = {} if used is None else {"presence": used}
    w, bal_state = spec.gram_weights(gram, jax.lax.stop_gradient(losses), bal_state, **extra)
    w = jnp.asarray(w, jnp.promote_types(losses.dtype, jnp.float32))

    grads: list[Any] = [None] * n
    if from_jac:
        for i, x in zip(sel, _task_tree.combine(w, jac)):
            grads[i] = x
    else:
        weighted = jax.tree_util.tree_leaves(backward(w.astype(losses.dtype)))
        for i in range(n):
            if shared[i]:
                grads[i] = weighted[i]
    if not all(shared):
        summed = jax.tree_util.tree_leaves(plain(_used_cot(used, losses)))
        for i in range(n):
            if not shared[i]:
                grads[i] = summed[i]
    g = jax.tree_util.tree_unflatten(treedef, grads)

    recorded = _checks.recorded_weights(bal_state)
    applied = recorded if recorded is not None and recorded.shape == (k,) else w
    present = jnp.ones((k,), bool) if presence is None else presence
    return RouteOut(
        g,
        bal_state,
        losses,
        aux,
        applied.astype(jnp.float32),
        task_finite,
        present,
        present if used is None else used,
    )


def _used_cot(used: jax.Array | None, losses: jax.Array) -> jax.Array:
    """The cotangent of the plain sum over the tasks used (ones when all are)."""
    return jnp.ones_like(losses) if used is None else used.astype(losses.dtype)
