"""DualProj weights: the preference-weighted mean gradient projected onto the dual cone.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232 (torchjd's ``DualProj``; the projection is Eq. 11
of Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", 2017,
https://arxiv.org/abs/1706.08840).

The update is the projection of ``Jᵀp`` onto the dual cone ``{x : Jx ≥ 0}``, i.e.
``Jᵀv`` with ``v = argmin_{v ≥ p} ½ vᵀGv`` (Proposition 1 of Quinton & Rey), solved
by :func:`box_qp` on the trace-normalised, ridge-regularised Gram matrix.
"""

from __future__ import annotations

import jax

from mtl_jax.weighting._gram import (
    as_gram,
    check_presence,
    nan_unless_finite,
    preference,
    restrict_gram,
)
from mtl_jax.weighting._qp import box_qp, check_solver_args, normalize_gram

__all__ = ["dualproj_weights"]


def dualproj_weights(
    gram: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    reg_eps: float = 1e-4,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """DualProj task weights for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ``.
      pref_vector: ``[K]`` preference ``p`` (default uniform ``1/K``: the mean gradient).
      reg_eps: ridge added to the trace-normalised Gram matrix.
      num_iters: cap on the first-order iterations of :func:`box_qp`.
      tol: stopping tolerance of :func:`box_qp`.
      polish_iters: cap on the active-set steps of :func:`box_qp`.
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0
        and the problem is the ``|S|``-task one on the present tasks: their Gram
        matrix (trace-normalised over them), their preferences (the default
        becomes ``1/|S|``).

    Returns:
      ``[K]`` weights ``w ≥ p`` with ``Jᵀw`` the projection; ``G w ≥ 0`` up to the
      solver's tolerance and the ridge, ``(G w)_k ≥ −reg_eps·tr(G)·w_k`` (the KKT
      conditions of the ridged problem; ``reg_eps=0`` gives exact non-conflict).
      All NaN if ``G`` has a non-finite entry among the present tasks.

    Raises:
      ValueError: for a concrete ``pref_vector`` that is not finite, non-negative,
        with a positive entry (a traced one that breaks this gives NaN weights),
        and for invalid solver arguments.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import dualproj_weights
      >>> w = dualproj_weights(jnp.array([[1.0, -2.0], [-2.0, 8.0]]), reg_eps=0.0)
      >>> [round(float(x), 3) for x in w]
      [1.0, 0.5]
    """
    check_solver_args(num_iters, tol, polish_iters, reg_eps)
    g = as_gram(gram, symmetrize=False)
    k = g.shape[0]
    m = check_presence(presence, k)
    gn = normalize_gram(g, reg_eps=reg_eps, presence=m)
    p = preference(pref_vector, k, gn.dtype, default=1.0 / k, nonnegative=True, presence=m)
    v = box_qp(gn, p, num_iters=num_iters, tol=tol, polish_iters=polish_iters, presence=m)
    return nan_unless_finite(v, restrict_gram(g, m), p)
