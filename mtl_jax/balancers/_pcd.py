"""PCD: follow the primary task's gradient, guarantee each secondary task some progress.

Varam & AlHajri, TMLR 2026 (see :mod:`mtl_jax.weighting._pcd`). The pure functions are
:func:`mtl_jax.weighting.pcd_weights`, :func:`mtl_jax.weighting.pcd_scales` and
:func:`mtl_jax.weighting.pcd_norms_update`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _pcd
from mtl_jax.weighting._gram import restrict_gram
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["PCDState", "pcd"]


class PCDState(NamedTuple):
    """PCD's state: the moving average of each task's squared gradient norm, the steps
    each task has taken part in (for the bias correction) and the last weights."""

    sq_norm_ema: jax.Array  # [K] float32, moving average of ‖g_k‖² (kept for absent tasks)
    task_steps: jax.Array  # [K] int32, steps each task has taken part in
    weights: jax.Array  # [K] float32, weights applied at the last update


def pcd(
    *,
    tau: float | jax.typing.ArrayLike = 0.02,
    beta: float = 0.999,
    eps: float = 1e-8,
    num_tasks: int | None = None,
    max_iters: int | None = None,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """PCD: ``d ∝ argmin_d ½‖d − g̃_1‖²`` s.t. ``g̃_jᵀd ≥ τ_j‖g̃_j‖²``, rescaled to ``‖g_1‖``.

    Priority-Constrained Descent treats task 1 (the first loss) as the primary
    objective and tasks ``2..K`` as secondary ones. The update follows the primary
    gradient as closely as possible while every secondary task ``j`` keeps at least
    the fraction ``τ_j`` of the first-order progress it would get from a step along
    its own normalised gradient. The gradients are normalised by
    ``g̃_i = g_i / √(v̂_i + ε)``, ``v̂_i`` the bias-corrected moving average (decay
    ``β``) of ``‖g_i‖²``, so ``τ`` is a scale-free fraction: scaling a secondary
    task's loss by a constant does not change the update (up to ``ε``). With
    ``d̃ = g̃_1 + Σ_j μ_j g̃_j`` the multipliers ``μ ≥ 0`` solve a ``(K−1)``-variable
    QP in the Gram matrix, solved exactly by an active-set method
    (:func:`mtl_jax.weighting.pcd_weights`).

    Special cases: ``g_1 = 0`` gives a zero update; constraints that no direction
    meets (e.g. two opposite secondary gradients, ``τ > 0``) are dropped and the
    update is ``g_1``; a zero ``d̃`` gives a zero update. Not symmetric in the
    tasks: order the losses with the primary task first.

    Scale: ``‖d‖ = ‖g_1‖`` (the primary gradient's norm), as torchjd's ``PCD``.

    Modes: full-parameter and representation mode (only ``G`` is needed). An
    absent task gets weight 0 and keeps its moving average and step count; the
    step is PCD on the present tasks alone, so with the primary task absent the
    first present task leads. A non-finite Gram matrix (on the present tasks)
    gives NaN weights and leaves the state unchanged.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      tau: ``τ ∈ [0, 1]``, the guaranteed fraction of normalised progress: a float
        shared by the secondary tasks, or a ``[K − 1]`` vector, one per secondary
        task (torchjd's default 0.02).
      beta: decay ``β ∈ [0, 1)`` of the moving average of ``‖g_i‖²``.
      eps: ``ε ≥ 0`` added to the moving average before its inverse square root.
      num_tasks: ``K`` (required, keyword-only).
      max_iters: cap on the dual QP's active-set iterations (default ``10 K``).
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Varam & AlHajri, "Not All Objectives Are Born Equal: Priority-Constrained
      Descent for Hierarchical Multi-Objective Optimization", TMLR 2026,
      https://openreview.net/forum?id=HT01yGHLEt, https://arxiv.org/abs/2606.29521
    """
    _validate.check_num_tasks(num_tasks, required=True)
    tau = _pcd.check_pcd_tau(tau, num_tasks)
    beta = _validate.check_number("beta", beta, low=0.0, high=1.0, high_open=True)
    eps = _validate.check_number("eps", eps, low=0.0)
    _validate.check_int("max_iters", max_iters, allow_none=True)

    def init(params):
        del params
        k = num_tasks
        w = jnp.zeros((k,), jnp.float32).at[0].set(1.0)  # before any update: g_1
        return PCDState(jnp.zeros((k,), jnp.float32), jnp.zeros((k,), jnp.int32), w)

    def weights_fn(gram, losses, state, presence=None):
        del losses
        present = as_presence(presence, num_tasks)
        ema, steps = _pcd.pcd_norms_update(
            state.sq_norm_ema, state.task_steps, gram, beta=beta, presence=present
        )
        scales = _pcd.pcd_scales(ema, steps, beta=beta, eps=eps)
        w = _pcd.pcd_weights(
            gram,
            scales,
            tau=tau,
            presence=present,
            max_iters=max_iters,
        )
        # A non-finite Gram matrix leaves the moving average as it was.
        ok = jnp.all(jnp.isfinite(restrict_gram(gram, present)))
        ema = jnp.where(ok, ema, state.sq_norm_ema)
        steps = jnp.where(ok, steps, state.task_steps)
        w = w.astype(jnp.float32)
        return w, PCDState(ema, steps, w)

    return _base.gram_balancer(init, weights_fn, shared=shared)
