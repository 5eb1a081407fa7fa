"""The gradient routes of the training step: loss, Gramian, Jacobian, representation.

Each route returns the balanced gradient (params-shaped), the new balancer
state, the losses, the aux value, the applied task weights ``[K]`` and a
per-task flag saying whether the per-task gradients the route saw are finite.

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

from mtl_jax import _task_tree
from mtl_jax._jacobian import value_and_jacobian
from mtl_jax.balancers._base import Balancer
from mtl_jax.training import _checks, _gramian

PyTree = Any


class RouteOut(NamedTuple):
    grads: PyTree  # params-shaped balanced gradient
    balancer_state: Any
    losses: jax.Array  # [K]
    aux: Any
    weights: jax.Array  # [K] float32, the applied task weights
    task_finite: jax.Array  # [K] bool: the per-task gradients the route saw are finite


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
    recorded = _checks._recorded_weights(state)
    if recorded is not None and recorded.shape == (k,):
        return recorded.astype(jnp.float32)
    return fallback()


def _checked_fn(fn, has_aux, name):
    def wrapped(*args):
        losses, aux = _checks.check_losses(fn(*args), has_aux, name)
        return (losses, aux) if has_aux else losses

    return wrapped


def loss_route(loss_fn, balancer: Balancer, params, bal_state, batch, *, has_aux, name="loss_fn"):
    """``w = f(losses)``, then one backward pass with cotangent ``w``."""
    spec = balancer.spec
    f = _checked_fn(lambda p: loss_fn(p, batch), has_aux, name)
    out = jax.vjp(f, params, has_aux=has_aux)
    losses, vjp_fn = out[0], out[1]
    aux = out[2] if has_aux else None
    k = losses.shape[0]
    _checks.check_num_tasks(k, bal_state)
    w, bal_state = spec.loss_weights(jax.lax.stop_gradient(losses), bal_state)
    w = jnp.asarray(w, jnp.promote_types(losses.dtype, jnp.float32))
    (g,) = vjp_fn(w.astype(losses.dtype))
    mask = _task_tree.resolve_mask(spec.shared, params)
    g = honour_shared(g, lambda: vjp_fn(jnp.ones_like(losses))[0], mask)
    return RouteOut(g, bal_state, losses, aux, w.astype(jnp.float32), jnp.ones((k,), bool))


def jacobian_route(loss_fn, balancer: Balancer, params, bal_state, batch, *, has_aux, chunk_size):
    """The full task Jacobian w.r.t. the parameters, then the balancer."""
    f = _checked_fn(loss_fn, has_aux, "loss_fn")
    value, jac = value_and_jacobian(f, has_aux=has_aux, chunk_size=chunk_size)(params, batch)
    losses, aux = value if has_aux else (value, None)
    k = losses.shape[0]
    _checks.check_num_tasks(k, bal_state)
    g, bal_state = balancer.update(jac, bal_state, params, task_losses=losses)
    mask = jax.tree_util.tree_leaves(_task_tree.resolve_mask(balancer.spec.shared, params))
    jac_l, g_l = jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(g)
    shared_j = [x for x, m in zip(jac_l, mask) if m]
    shared_g = [x for x, m in zip(g_l, mask) if m]
    w = _recorded_or(bal_state, k, lambda: effective_weights(shared_j, shared_g))
    return RouteOut(g, bal_state, losses, aux, w, _task_finite(jac_l, k))


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
):
    """``G`` over the Gram leaves, ``w = f(G)``, ``Σ_k w_k ∇L_k`` (see ``_gramian``).

    With a ``representation`` that has ``decode_tasks`` (and whose
    ``decode_tasks`` reads no shared leaf), the per-task backward passes run
    through the encoder only (:func:`mtl_jax.training._gramian.gramian_route`).
    """
    f = _checked_fn(loss_fn, has_aux, "loss_fn")
    return RouteOut(
        *_gramian.gramian_route(
            f,
            balancer,
            params,
            bal_state,
            batch,
            has_aux=has_aux,
            chunk_size=chunk_size,
            representation=representation,
            per_task_copies=_per_task_copies,
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


def _per_task_copies(representation, params, z, batch, has_aux):
    """Heads' gradient of ``Σ_k L_k`` and ``∂L_k/∂z`` for all ``k`` in ONE backward pass.

    ``decode_tasks`` sees one copy of ``z`` per task; loss ``k`` reads only copy
    ``k``, so the gradient of ``Σ_k L_k`` w.r.t. copy ``k`` is ``∂L_k/∂z``.
    """
    name = "representation.decode"
    shape = jax.eval_shape(
        _checked_fn(lambda zz: representation.decode(params, zz, batch), has_aux, name), z
    )
    k = (shape[0] if has_aux else shape).shape[0]
    zs = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (k, *jnp.shape(x))), z)
    name = "representation.decode_tasks"
    dec = _checked_fn(lambda p, zz: representation.decode_tasks(p, zz, batch), has_aux, name)
    out = jax.vjp(dec, params, zs, has_aux=has_aux)
    losses, dec_vjp = out[0], out[1]
    if losses.shape != (k,):
        raise ValueError(
            f"{name} returned losses of shape {tuple(losses.shape)}; decode returns ({k},)"
        )
    g_heads, jz = dec_vjp(jnp.ones_like(losses))
    return g_heads, jz, losses, (out[2] if has_aux else None)


def representation_route(
    loss_fn, balancer: Balancer, representation, params, bal_state, batch, *, has_aux
):
    """Balances the per-task gradients w.r.t. ``z = encode(params, batch)`` (MGDA-UB)."""
    spec = balancer.spec
    encode, decode = representation.encode, representation.decode
    # Shapes only: an un-jitted step would otherwise run the encoder twice.
    z = jax.eval_shape(encode, params, batch)
    _checks.check_decode_uses_z(decode, params, z, batch, has_aux)
    if spec.kind == "loss":
        composed = lambda p, b: decode(p, encode(p, b), b)
        return loss_route(
            composed, balancer, params, bal_state, batch, has_aux=has_aux, name="decode"
        )
    z, enc_vjp = jax.vjp(lambda p: encode(p, batch), params)
    if representation.decode_tasks is None:
        dec = _checked_fn(lambda p, zz: decode(p, zz, batch), has_aux, "representation.decode")
        out = jax.vjp(dec, params, z, has_aux=has_aux)
        losses, dec_vjp = out[0], out[1]
        aux = out[2] if has_aux else None
        k = losses.shape[0]
        _checks.check_num_tasks(k, bal_state)
        g_heads, _ = dec_vjp(jnp.ones_like(losses))
        # K backward passes through the whole decoder.
        jz = jax.vmap(lambda e: dec_vjp(e)[1])(jnp.eye(k, dtype=losses.dtype))
    else:
        g_heads, jz, losses, aux = _per_task_copies(representation, params, z, batch, has_aux)
        k = losses.shape[0]
        _checks.check_num_tasks(k, bal_state)
    z_leaves, z_def = jax.tree_util.tree_flatten(jz)

    def balance(z_leaves, losses, bal_state):
        cot, new_state = spec.combine(z_leaves, losses, bal_state)
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
        (g_enc_sum,) = enc_vjp(jax.tree_util.tree_map(_task_tree.sum_leading, jz))
        return jax.tree_util.tree_map(jnp.add, g_enc_sum, g_heads)

    g = honour_shared(g, plain_sum, _task_tree.resolve_mask(spec.shared, params))
    return RouteOut(g, bal_state, losses, aux, w, _task_finite(z_leaves, k))
