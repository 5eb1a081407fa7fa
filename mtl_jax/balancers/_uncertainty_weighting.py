"""Uncertainty weighting with learnable homoscedastic log-variances.

Kendall, Gal & Cipolla, CVPR 2018, https://arxiv.org/abs/1705.07115. The
weighting functions are in :mod:`mtl_jax.weighting` (``uncertainty_*``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _uncertainty

__all__ = ["UncertaintyWeightingState", "uncertainty_weighting"]


class UncertaintyWeightingState(NamedTuple):
    log_variances: jax.Array  # [K], s_k = log σ_k²
    inner_state: Any  # state of the optimiser of the log-variances
    weights: jax.Array  # [K], weights used at the last update


def uncertainty_weighting(
    *,
    num_tasks: int | None = None,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    init_log_variance: float = 0.0,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """Kendall et al.'s uncertainty weighting, the log-variances kept in the state.

    The joint objective is ``Σ_k ½ exp(−s_k) L_k + ½ s_k`` (the paper's regression
    form). Each update returns ``Σ_k w_k ∇L_k`` with ``w_k = ½ exp(−s_k)`` at the
    current ``s`` and then takes one optimiser step on ``s`` with the closed-form
    gradient ``½ − ½ exp(−s_k) L_k`` — simultaneous gradient descent on the joint
    objective, as when ``s`` is trained with the network.

    Scale: at ``s = 0`` the update is ½ of :func:`equal_weighting`'s.

    Presence: an absent task gets weight 0 and its log-variance (with its
    optimiser moments) is left unchanged; the optimiser's step count advances.

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      num_tasks: ``K`` (required).
      learning_rate: Adam learning rate for ``s`` (ignored if ``optimizer`` is given).
      optimizer: the optax optimiser of ``s``; default ``optax.adam(learning_rate)``.
      init_log_variance: initial ``s_k``.
      shared: leaves to weight (all by default).

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Kendall, Gal & Cipolla 2018, https://arxiv.org/abs/1705.07115
    """
    _validate.check_num_tasks(num_tasks, required=True)
    init_log_variance = _validate.check_number("init_log_variance", init_log_variance)
    optimizer = _state.inner_optimizer(optimizer, learning_rate)

    def init(params):
        del params
        s = jnp.full((num_tasks,), init_log_variance, jnp.float32)
        return UncertaintyWeightingState(s, optimizer.init(s), _uncertainty.uncertainty_weights(s))

    def weights_fn(losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=num_tasks)
        s = state.log_variances
        w = _uncertainty.uncertainty_weights(s, presence=presence)
        grad = _uncertainty.uncertainty_log_variance_grad(
            s, losses.astype(s.dtype), presence=presence
        )
        step, inner = optimizer.update(grad, state.inner_state, s)
        s_new = _presence.keep_absent(optax.apply_updates(s, step), s, presence)
        inner = _presence.keep_absent_tree(inner, state.inner_state, presence, num_tasks)
        return w, UncertaintyWeightingState(s_new, inner, w)

    return _base.loss_balancer(init, weights_fn, shared=shared)
