"""UPGrad: project each task's gradient onto the dual cone of all gradients and sum.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232. The weights come from
:func:`mtl_jax.weighting.upgrad_weights`.
"""

from __future__ import annotations

import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _upgrad
from mtl_jax.weighting._gram import check_preference
from mtl_jax.weighting._qp import check_solver_args

__all__ = ["upgrad"]


def upgrad(
    *,
    pref_vector: jnp.ndarray | None = None,
    reg_eps: float = 1e-4,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """UPGrad (unconflicting projection of gradients).

    Each task's weighted gradient ``p_i g_i`` is projected onto the dual cone
    ``{x : ⟨g_k, x⟩ ≥ 0 ∀k}`` of the task gradients; the update is the sum of the
    projections, ``d = Σ_i π_J(p_i g_i) = Jᵀ Σ_i v⁽ⁱ⁾`` with
    ``v⁽ⁱ⁾ = argmin_{v ≥ p_i e_i} ½ vᵀGv``. It is non-conflicting
    (``⟨g_k, d⟩ ≥ 0`` for every task, up to the ridge ``reg_eps`` and the solver's
    tolerance), linear under scaling of ``J`` and equal to ``Jᵀp`` when the
    gradients do not conflict.

    Scale: with the default uniform ``p = 1/K`` (torchjd's default) and
    non-conflicting gradients the update is the *mean* gradient, ``1/K`` of
    :func:`equal_weighting`'s; pass ``pref_vector=jnp.ones(K)`` for the sum scale.

    Modes: full-parameter and representation mode (only ``G`` is needed).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      pref_vector: ``[K]`` non-negative preference ``p`` (default ``1/K``).
      reg_eps: ridge added to the trace-normalised Gram matrix (torchjd's default).
      num_iters: cap on the first-order iterations of the QP solver
        :func:`mtl_jax.weighting.box_qp`.
      tol: the solver's stopping tolerance (relative natural residual).
      polish_iters: cap on the solver's active-set steps.
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Quinton & Rey 2024, https://arxiv.org/abs/2406.16232
    """
    _validate.check_num_tasks(num_tasks)
    check_solver_args(num_iters, tol, polish_iters, reg_eps)
    pref = check_preference(pref_vector, num_tasks, nonnegative=True)

    return _base.stateless_gram_balancer(
        lambda g, losses, presence=None: _upgrad.upgrad_weights(
            g,
            pref_vector=pref,
            presence=presence,
            reg_eps=reg_eps,
            num_iters=num_iters,
            tol=tol,
            polish_iters=polish_iters,
        ),
        shared=shared,
        num_tasks=num_tasks,
    )
