"""DB-MTL: log-transformed losses plus gradient-magnitude balancing.

Lin, Ye, Xu, Shi, Zhang & Kwok, "Dual-Balancing for Multi-Task Learning",
https://arxiv.org/abs/2308.12029. The weights are
:func:`mtl_jax.weighting.db_mtl_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _db_mtl

__all__ = ["DBMTLState", "db_mtl"]


class DBMTLState(NamedTuple):
    step: jax.Array  # [] int32, updates so far
    norms: jax.Array  # [K], moving average of ‖∇ log L_k‖
    weights: jax.Array  # [K] float32, weights on the raw losses used at the last update


def db_mtl(
    *,
    num_tasks: int | None = None,
    beta: float = 0.9,
    beta_sigma: float = 0.0,
    eps: float = 1e-8,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """DB-MTL: ``Σ_k α_k ∇ log L_k`` with ``α_k = max_j n_j / n_k``, ``n_k ≈ ‖∇ log L_k‖``.

    *Loss-scale balancing*: every task is trained on ``log(L_k + eps)``, whose
    gradient ``∇L_k / (L_k + eps)`` no longer depends on the loss's units.
    *Gradient-magnitude balancing*: each log-loss gradient is scaled up to the
    largest norm among the tasks. ``n_k`` is an exponential moving average,
    ``n ← β_t n + (1 − β_t) ‖∇ log L_k‖`` with ``β_t = β / t^σ`` (zero start, so
    the ratios are exact from the first step).

    What it needs: the per-task gradient norms over the shared leaves, i.e. the
    diagonal of ``G = J Jᵀ`` (``‖∇ log L_k‖ = √G_kk / (L_k + eps)``). It is built as
    a Gram balancer that reads only ``diag(G)``: in full-parameter mode the
    training step's Gramian route forms each task's gradient norm and discards
    the gradient (no ``K × K`` contraction, no stacked task Jacobian), then takes
    one backward pass with cotangent ``w``; representation mode (an extension:
    the paper and LibMTL use parameter gradients) works on the Jacobian of the
    shared representation. Not loss-only.

    Deviation: the paper and LibMTL keep the moving average of the *gradients*
    (a ``[K, P]`` buffer) and combine those averaged gradients. Here the average is
    of their *norms* (``[K]`` state) and the weights ``w_k = α_k / (L_k + eps)``
    act on the current gradients; the following optimiser's momentum supplies
    the smoothing of the direction. With ``beta=0`` both agree exactly.

    Presence: the maximum norm is over the present tasks, an absent task gets
    weight 0 and its moving-average norm is left unchanged.

    Scale: each task contributes a vector of norm ``max_j ‖∇ log L_j‖`` (so
    typically far from equal weighting's scale; Adam absorbs it).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      beta: moving-average factor ``β ∈ [0, 1)`` (LibMTL: 0.9).
      beta_sigma: decay exponent ``σ ≥ 0`` of ``β_t = β / t^σ`` (LibMTL: 0).
      eps: added to the losses inside the logarithm.
      shared: leaves to balance (all by default); the others receive the plain sum.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Lin et al. 2023, https://arxiv.org/abs/2308.12029
    """
    _validate.check_num_tasks(num_tasks, required=True)
    beta = _validate.check_number("beta", beta, low=0.0, high=1.0, high_open=True)
    beta_sigma = _validate.check_number("beta_sigma", beta_sigma, low=0.0)
    eps = _validate.check_number("eps", eps, low=0.0, low_open=True)

    def init(params):
        del params
        k = num_tasks
        return DBMTLState(
            jnp.zeros((), jnp.int32), jnp.zeros((k,), jnp.float32), _state.init_weights(k)
        )

    def weights_fn(gram, losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=num_tasks)
        step = state.step + 1
        beta_t = beta / step.astype(jnp.float32) ** beta_sigma
        n_now = _db_mtl.db_mtl_log_grad_norms(gram, losses, eps=eps).astype(jnp.float32)
        norms = beta_t * state.norms + (1.0 - beta_t) * n_now
        norms = _presence.keep_absent(norms, state.norms, presence)
        w = _db_mtl.db_mtl_weights(norms, losses.astype(jnp.float32), eps=eps, presence=presence)
        return w, DBMTLState(step, norms, w)

    # The weights read only diag(G): the Gramian route forms just the per-task
    # gradient norms (training._gramian.diagonal_only).
    return _base.gram_balancer(init, weights_fn, shared=shared, diagonal_only=True)
