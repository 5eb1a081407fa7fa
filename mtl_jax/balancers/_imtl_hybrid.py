"""IMTL with both halves (LibMTL's ``IMTL``): learned loss scales, then IMTL-G.

Liu et al., ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr. The weights
are :func:`mtl_jax.weighting.imtl_hybrid_weights`; the scales follow
:func:`mtl_jax.balancers.imtl_l`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.balancers._scale_invariant import _keep_absent
from mtl_jax.weighting import _imtl_hybrid, _scale_invariant
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["IMTLHybridState", "imtl_hybrid"]


class IMTLHybridState(NamedTuple):
    log_scales: jax.Array  # [K] float32, s_k
    inner_state: Any  # state of the optimiser of s
    weights: jax.Array  # [K] float32, weights applied at the last update


def imtl_hybrid(
    *,
    num_tasks: int | None = None,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    init_log_scale: float = 0.0,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """IMTL (IMTL-L + IMTL-G): IMTL-G's weights on the gradients of the scaled losses.

    With scaled losses ``L̃_k = e^{s_k} L_k − s_k`` the gradients are
    ``g̃_k = e^{s_k} g_k``; the update is IMTL-G's aggregate of them,
    ``Σ_k α_k g̃_k`` (``α`` sums to 1, equal projections onto the unit ``g̃_k``,
    which are the unit ``g_k``). Then ``s`` takes one optimiser step on the
    gradient of ``Σ_k L̃_k``, ``e^{s_k} L_k − 1`` — as in LibMTL, where each task's
    backward pass accumulates that gradient into ``s`` (not weighted by ``α``).
    :func:`imtl` is the gradient half alone and :func:`imtl_l` the loss half.

    Scale: at ``s = 0`` the update is :func:`imtl`'s (weights summing to 1).

    Modes: full-parameter and representation mode (only ``G`` is needed). An
    absent task gets weight 0, IMTL-G is solved over the present tasks and the
    absent task's ``s_k`` and optimiser moments are unchanged.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      learning_rate: Adam learning rate for ``s`` (ignored if ``optimizer`` is given).
      optimizer: the optax optimiser of ``s``; default ``optax.adam(learning_rate)``.
      init_log_scale: initial ``s_k`` (LibMTL: 0).
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

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
        w = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
        return IMTLHybridState(s, optimizer.init(s), w)

    def weights_fn(gram, losses, state, presence=None):
        present = as_presence(presence, num_tasks)
        s = state.log_scales
        w = _imtl_hybrid.imtl_hybrid_weights(gram, s, presence=present)
        grad = _scale_invariant.imtl_l_scale_grad(s, losses.astype(s.dtype), presence=present)
        step, inner = optimizer.update(grad, state.inner_state, s)
        s_new = jnp.where(present, optax.apply_updates(s, step), s)
        inner = _keep_absent(inner, state.inner_state, present)
        return w, IMTLHybridState(s_new, inner, w.astype(jnp.float32))

    return _base.gram_balancer(init, weights_fn, shared=shared)
