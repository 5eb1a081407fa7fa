"""Scale-invariant loss (SI) and IMTL-L: loss-only balancers that undo the losses' scales.

SI (minimise ``Σ_k log L_k``; Navon et al. 2022, https://arxiv.org/abs/2202.01017)
and IMTL-L (learned scales ``e^{s_k} L_k − s_k``; Liu et al., ICLR 2021,
https://openreview.net/forum?id=IMPnRXEWpvr). The weighting functions are
:func:`mtl_jax.weighting.scale_invariant_weights` and ``imtl_l_*``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _scale_invariant
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["IMTLLState", "imtl_l", "scale_invariant"]


def scale_invariant(
    *, eps: float = 1e-8, shared: MaskSpec = None, num_tasks: int | None = None
) -> _base.Balancer:
    """Scale-invariant loss: the gradient of ``Σ_k log L_k``, i.e. weights ``w_k = 1 / L_k``.

    ``∇ Σ_k log L_k = Σ_k ∇L_k / L_k``: multiplying a loss by a constant does not
    change the update, so tasks with losses of different units are balanced
    without tuning. The losses must be positive (a loss at or below ``eps`` is
    floored at ``eps``).

    Scale: when every loss is 1 the update is :func:`equal_weighting`'s.

    Modes: loss-only (one backward pass of ``Σ_k w_k L_k`` with ``w`` held fixed);
    full-parameter and representation modes coincide. An absent task gets weight 0.

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      eps: positive floor on the losses.
      shared: leaves to weight (all by default); the others receive the plain sum.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Navon et al. 2022 (baseline "SI"), https://arxiv.org/abs/2202.01017
    """
    _validate.check_num_tasks(num_tasks)
    eps = _validate.check_number("eps", eps, low=0.0, low_open=True)

    def init(params):
        del params
        return _state.init_weights_state(num_tasks)

    def weights_fn(losses, state, presence=None):
        w = _scale_invariant.scale_invariant_weights(losses, eps=eps, presence=presence)
        return w, _state.WeightsState(_state.record_weights(state.weights, w))

    return _base.loss_balancer(init, weights_fn, shared=shared)


class IMTLLState(NamedTuple):
    log_scales: jax.Array  # [K] float32, s_k
    inner_state: Any  # state of the optimiser of s
    weights: jax.Array  # [K] float32, weights applied at the last update


def _keep_absent(new: Any, old: Any, present: jax.Array) -> Any:
    """Per-task leaves (shape ``[K]``) of ``new`` keep ``old``'s values where a task is absent."""
    k = present.shape[0]

    def pick(n, o):
        if jnp.shape(n) == (k,):
            return jnp.where(present, n, o)
        return n

    return jax.tree_util.tree_map(pick, new, old)


def imtl_l(
    *,
    num_tasks: int | None = None,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    init_log_scale: float = 0.0,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """IMTL-L: learned loss scales, the scaled objective ``Σ_k (e^{s_k} L_k − s_k)``.

    Each update returns ``Σ_k e^{s_k} ∇L_k`` at the current ``s`` and then takes
    one optimiser step on ``s`` with the closed-form gradient
    ``e^{s_k} L_k − 1`` (``s`` trained simultaneously with the network, as in the
    paper). At equilibrium every scaled loss ``e^{s_k} L_k`` is 1, which makes the
    weighting invariant to the losses' scales. The objective is twice Kendall et
    al.'s :func:`uncertainty_weighting` at ``−s``: same weighting, same optima.

    IMTL (Liu et al. 2021) has two halves: this loss-scale half (IMTL-L) and the
    gradient half IMTL-G, which is :func:`imtl` (equal projections of the
    aggregate onto the unit task gradients). LibMTL's ``IMTL`` is the hybrid: it
    scales the losses as here and then applies IMTL-G to the gradients of the
    scaled losses (:func:`imtl_hybrid`); torchjd ships the halves separately
    (``IMTLL``, ``IMTLG``).

    Scale: at ``s = 0`` the update is :func:`equal_weighting`'s.

    Modes: loss-only (one backward pass). An absent task gets weight 0 and its
    ``s_k`` and per-task optimiser moments are left unchanged.

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      learning_rate: Adam learning rate for ``s`` (ignored if ``optimizer`` is given).
      optimizer: the optax optimiser of ``s``; default ``optax.adam(learning_rate)``.
      init_log_scale: initial ``s_k`` (the paper and torchjd: 0).
      shared: leaves to weight (all by default); the others receive the plain sum.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
      https://openreview.net/forum?id=IMPnRXEWpvr
    """
    _validate.check_num_tasks(num_tasks, required=True)
    init_log_scale = _validate.check_number("init_log_scale", init_log_scale)
    optimizer = _state.inner_optimizer(optimizer, learning_rate)

    def init(params):
        del params
        s = jnp.full((num_tasks,), init_log_scale, jnp.float32)
        return IMTLLState(s, optimizer.init(s), jnp.exp(s))

    def weights_fn(losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=num_tasks)
        present = as_presence(presence, num_tasks)
        s = state.log_scales
        w = _scale_invariant.imtl_l_weights(s, presence=present)
        grad = _scale_invariant.imtl_l_scale_grad(s, losses.astype(s.dtype), presence=present)
        step, inner = optimizer.update(grad, state.inner_state, s)
        s_new = jnp.where(present, optax.apply_updates(s, step), s)
        inner = _keep_absent(inner, state.inner_state, present)
        return w, IMTLLState(s_new, inner, w)

    return _base.loss_balancer(init, weights_fn, shared=shared)
