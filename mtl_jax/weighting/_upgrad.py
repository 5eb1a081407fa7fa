"""UPGrad weights: average of each task's weighted gradient projected onto the dual cone.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232 (torchjd's ``UPGrad``).

For a preference ``p`` (uniform ``1/K`` by default), task ``i``'s vector
``p_i g_i`` is projected onto the dual cone ``{x : Jx ≥ 0}`` of the rows of ``J``;
the update is the sum of the projections. By Proposition 1 of the paper the
projection of ``Jᵀu`` is ``Jᵀv`` with ``v = argmin_{v ≥ u} ½ vᵀGv``, so the weights
are ``w = Σ_i v⁽ⁱ⁾`` with ``u⁽ⁱ⁾ = p_i e_i``, solved by :func:`box_qp` on the
trace-normalised, ridge-regularised Gram matrix (:func:`normalize_gram`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import (
    as_gram,
    check_presence,
    nan_unless_finite,
    preference,
    restrict_gram,
)
from mtl_jax.weighting._qp import box_qp, check_solver_args, normalize_gram

__all__ = ["upgrad_weights"]


def upgrad_weights(
    gram: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    reg_eps: float = 1e-4,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """UPGrad task weights for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ``.
      pref_vector: ``[K]`` preference ``p`` (default uniform ``1/K``).
      reg_eps: ridge added to the trace-normalised Gram matrix.
      num_iters: cap on the first-order iterations of :func:`box_qp`.
      tol: stopping tolerance of :func:`box_qp`.
      polish_iters: cap on the active-set steps of :func:`box_qp`.
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0
        and the problem is the ``|S|``-task one on the present tasks: their Gram
        matrix (trace-normalised over them), their preferences (the default
        becomes ``1/|S|``).

    Returns:
      ``[K]`` weights ``w`` with ``Jᵀw`` the UPGrad update; ``G w ≥ 0`` up to the
      solver's tolerance and the ridge: the KKT conditions of the ridged problem give
      ``(G w)_k ≥ −reg_eps·tr(G)·w_k``, so a task whose squared gradient norm is
      below ``reg_eps·tr(G)`` can see a small conflict (pass ``reg_eps=0`` for exact
      non-conflict). ``w ≥ p`` elementwise.
      All NaN if ``G`` has a non-finite entry among the present tasks.

    Raises:
      ValueError: for a concrete ``pref_vector`` that is not finite, non-negative,
        with a positive entry (a traced one that breaks this gives NaN weights),
        and for invalid solver arguments.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import upgrad_weights
      >>> w = upgrad_weights(jnp.array([[1.0, 0.0], [0.0, 1.0]]))
      >>> [round(float(x), 3) for x in w]
      [0.5, 0.5]
    """
    check_solver_args(num_iters, tol, polish_iters, reg_eps)
    g = as_gram(gram, symmetrize=False)
    k = g.shape[0]
    m = check_presence(presence, k)
    gn = normalize_gram(g, reg_eps=reg_eps, presence=m)
    p = preference(pref_vector, k, gn.dtype, default=1.0 / k, nonnegative=True, presence=m)
    v = box_qp(gn, jnp.diag(p), num_iters=num_iters, tol=tol, polish_iters=polish_iters, presence=m)
    return nan_unless_finite(jnp.sum(v, axis=0), restrict_gram(g, m), p)
