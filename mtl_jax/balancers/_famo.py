"""FAMO: Fast Adaptive Multitask Optimization (loss-only, O(1) per step in K).

Liu, Liang, Chen, Stone & Liu, NeurIPS 2023, https://arxiv.org/abs/2306.03792.
The weighting and the logit update are :func:`mtl_jax.weighting.famo_weights`
and :func:`mtl_jax.weighting.famo_logit_grad`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _famo

__all__ = ["FAMOState", "famo"]


class FAMOState(NamedTuple):
    logits: jax.Array  # [K], ξ; z = softmax(ξ)
    inner_state: Any  # state of the logits' optimiser
    prev_losses: jax.Array  # [K], losses seen at the previous update
    has_prev: jax.Array  # [K] bool, whether prev_losses[k] holds a real record
    weights: jax.Array  # [K], weights on the raw losses used at the last update


def famo(
    *,
    num_tasks: int | None = None,
    learning_rate: float = 0.025,
    gamma: float = 0.001,
    min_losses: jax.typing.ArrayLike | None = None,
    eps: float = 1e-8,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """FAMO: descend ``Σ_k z_k log(L_k − b_k)`` with weights ``z`` adapted to equalise improvement.

    Each update returns ``Σ_k w_k ∇L_k`` with ``w_k = z_k / (c (L_k − b_k + eps))``,
    ``c = Σ_j z_j / (L_j − b_j + eps)`` and ``z = softmax(ξ)``. The logits ``ξ`` are
    moved by Adam (``learning_rate``) on ``δ + γ ξ`` with
    ``δ = J_softmax(ξ)ᵀ (log(L_prev − b) − log(L_now − b))``, which raises the
    weight of tasks whose log-loss decreased least.

    One-step lag: the authors re-evaluate the losses on the *same* batch after the
    parameter update to obtain ``L_now``, which costs an extra forward pass. This
    transform sees one set of losses per call, so it keeps the previous call's
    losses in the state and updates ``ξ`` at the *start* of each call, from the
    previous step's losses to this step's (which come from the next batch). The
    weights of step ``t`` therefore use the improvement ``L_{t−1} → L_t`` — the same
    timing as the paper, with the new batch's losses standing in for the
    re-evaluated old batch. The first call leaves ``ξ`` unchanged.

    Presence: the softmax of the logits and the normalisation of the weights run
    over the present tasks, and an absent task gets weight 0. Only the tasks
    present now and at an earlier call (``has_prev``) move their logits (and
    optimiser moments); an absent task's logit and previous loss are left
    unchanged, so when it returns its improvement is measured from the last call
    in which it was present.

    Scale: the weights sum to 1 (``1/K`` of equal weighting at ``ξ = 0`` and equal
    losses).

    Modes: loss-only (one backward pass of ``Σ_k w_k L_k``).

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      learning_rate: Adam learning rate ``β`` of the logits (paper: 0.025).
      gamma: weight decay ``γ`` of the logits, added to their gradient as in
        ``torch.optim.Adam(weight_decay=γ)`` (LibMTL: 1e-3; authors' code: 1e-5).
      min_losses: ``[K]`` lower bounds ``b`` of the losses (default 0).
      eps: added to ``L − b`` before the logarithm.
      shared: leaves to weight (all by default); the others receive the plain sum.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Liu et al. 2023, https://arxiv.org/abs/2306.03792
    """
    _validate.check_num_tasks(num_tasks, required=True)
    learning_rate = _validate.check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    gamma = _validate.check_number("gamma", gamma, low=0.0)
    eps = _validate.check_number("eps", eps, low=0.0, low_open=True)
    if min_losses is not None:
        min_losses = jnp.asarray(min_losses, jnp.float32)
        if min_losses.shape != (num_tasks,):
            raise ValueError(f"min_losses must have shape ({num_tasks},), got {min_losses.shape}")
    optimizer = optax.adam(learning_rate)
    if gamma > 0:
        optimizer = optax.chain(optax.add_decayed_weights(gamma), optimizer)

    def init(params):
        del params
        xi = jnp.zeros((num_tasks,), jnp.float32)
        w = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
        no_prev = jnp.zeros((num_tasks,), bool)
        return FAMOState(xi, optimizer.init(xi), jnp.zeros_like(xi), no_prev, w)

    def weights_fn(losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=num_tasks)
        losses = losses.astype(jnp.float32)
        xi = state.logits
        if presence is None:
            moving = state.has_prev
            grad = _famo.famo_logit_grad(
                xi, state.prev_losses, losses, min_losses=min_losses, eps=eps
            )
        else:
            moving = state.has_prev & presence
            grad = _famo.famo_logit_grad(
                xi, state.prev_losses, losses, min_losses=min_losses, eps=eps, presence=moving
            )
        step, inner = optimizer.update(grad, state.inner_state, xi)
        xi = jnp.where(moving, optax.apply_updates(xi, step), xi)
        # The step count advances when any logit moves; the moments only for those.
        any_moving = jnp.any(moving)
        inner = jax.tree_util.tree_map(
            lambda new, old: jnp.where(moving if jnp.ndim(new) == 1 else any_moving, new, old),
            inner,
            state.inner_state,
        )
        w = _famo.famo_weights(xi, losses, min_losses=min_losses, eps=eps, presence=presence)
        if presence is None:
            return w, FAMOState(xi, inner, losses, jnp.ones((num_tasks,), bool), w)
        prev = _presence.keep_absent(losses, state.prev_losses, presence)
        return w, FAMOState(xi, inner, prev, state.has_prev | presence, w)

    return _base.loss_balancer(init, weights_fn, shared=shared)
