"""MGDA / MGDA-UB: descend along the min-norm element of the task gradients' convex hull.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS
2018, https://arxiv.org/abs/1810.04650. The solver is
:func:`mtl_jax.weighting.mgda_weights`.
"""

from __future__ import annotations

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _mgda
from mtl_jax.weighting._qp import check_solver_args

__all__ = ["mgda"]


def mgda(
    *,
    normalization: _mgda.Normalization = "none",
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """MGDA: the min-norm point ``d = Σ_k w_k g_k`` with ``w`` on the simplex.

    ``d`` is a common descent direction: ``⟨g_k, d⟩ ≥ ‖d‖² ≥ 0`` for every task,
    and ``d = 0`` exactly at Pareto-stationary points.

    Scale: the weights sum to 1 (before normalisation), so with ``K`` identical
    gradients the update is ``1/K`` of :func:`equal_weighting`'s.

    Modes: full-parameter (Gram over the shared leaves) and representation mode
    (MGDA-UB: Gram of the gradients w.r.t. the shared representation).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      normalization: gradient normalisation before solving — ``"none"``,
        ``"l2"`` (‖g_k‖), ``"loss"`` (L_k) or ``"loss+"`` (L_k‖g_k‖); the weights
        are divided by the normalisers, so the update is the min-norm point of
        the normalised gradients (as LibMTL in full-parameter mode).
      num_iters: cap on the first-order iterations of the simplex QP solver
        (:func:`mtl_jax.weighting.simplex_qp`).
      tol: the solver's stopping tolerance (relative natural residual).
      polish_iters: cap on the solver's active-set steps.
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Sener & Koltun 2018, https://arxiv.org/abs/1810.04650
    """
    _validate.check_num_tasks(num_tasks)
    if normalization not in _mgda._NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {_mgda._NORMALIZATIONS}, got {normalization!r}"
        )
    check_solver_args(num_iters, tol, polish_iters)

    return _base.stateless_gram_balancer(
        lambda g, losses, presence=None: _mgda.mgda_weights(
            g,
            losses,
            presence=presence,
            normalization=normalization,
            num_iters=num_iters,
            tol=tol,
            polish_iters=polish_iters,
        ),
        shared=shared,
        num_tasks=num_tasks,
    )
