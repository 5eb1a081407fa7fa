"""Pieces shared by the bilevel balancers (MOML, FORUM): masked losses, look-ahead steps, checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence


def masked_losses(task_loss_fn: Callable, params: Any, batch: Any, mask: jax.Array) -> jax.Array:
    """``task_loss_fn(params, batch)`` with the masked-out tasks' losses set to 0 by ``where``."""
    losses = task_loss_fn(params, batch)
    return jnp.where(mask, losses, jnp.zeros((), losses.dtype))


def mask_of(presence: Any, num_tasks: int, name: str) -> jax.Array:
    """A ``[K]`` bool mask (all ``True`` for ``None``); ``ValueError`` on a bad one."""
    p = _presence.check_presence(presence, num_tasks, name)
    return jnp.ones((num_tasks,), bool) if p is None else p


def sgd_steps(
    task_loss_fn: Callable, params: Any, batch: Any, weights: jax.Array, lr: float, steps: int
) -> Any:
    """``steps`` gradient steps ``ω ← ω − lr ∇ Σ_k w_k L_k(ω)`` (differentiable in ``w``)."""

    def one(p, _):
        g = jax.grad(lambda q: jnp.sum(weights * task_loss_fn(q, batch)))(p)
        return jax.tree_util.tree_map(lambda x, y: x - lr * y.astype(x.dtype), p, g), None

    out, _ = jax.lax.scan(one, params, None, length=steps)
    return out


def task_jacobian(fn: Callable, params: Any) -> list[jax.Array]:
    """The leaves of ``jax.jacrev(fn)(params)`` flattened to ``[K, P_leaf]``."""
    jac = jax.jacrev(fn)(params)
    return [x.reshape(x.shape[0], -1) for x in jax.tree_util.tree_leaves(jac)]


def cross_gram(a: list[jax.Array], b: list[jax.Array]) -> jax.Array:
    """``Σ_leaves A Bᵀ`` for two lists of ``[K, P]`` leaves (float32 or wider)."""
    out = None
    for x, y in zip(a, b, strict=True):
        t = jnp.promote_types(jnp.promote_types(x.dtype, y.dtype), jnp.float32)
        term = x.astype(t) @ y.astype(t).T
        out = term if out is None else out + term
    return out


def meta_optimizer(optimizer: Any, lr: float) -> optax.GradientTransformation:
    """``optimizer`` (an optax transform) or ``Adam(lr)``; ``TypeError`` naming the argument."""
    if optimizer is None:
        return optax.adam(lr)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"meta_optimizer must be an optax GradientTransformation, got {optimizer!r}"
        )
    return optimizer


def meta_step(
    meta_opt: optax.GradientTransformation,
    grad: jax.Array,
    logits: jax.Array,
    opt_state: Any,
    keep: jax.Array,
) -> tuple[jax.Array, Any]:
    """One step of ``meta_opt`` on the ``[K]`` logits; the tasks not in ``keep`` are left as
    they were (logit and per-task optimiser moments)."""
    upd, new_state = meta_opt.update(grad.astype(logits.dtype), opt_state, logits)
    new_logits = optax.apply_updates(logits, upd)
    k = logits.shape[0]
    new_logits = _presence.keep_absent(new_logits, logits, keep)
    new_state = _presence.keep_absent_tree(new_state, opt_state, keep, k)
    return new_logits, new_state
