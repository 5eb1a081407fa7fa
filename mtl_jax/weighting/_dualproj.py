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

from mtl_jax.weighting._gram import as_gram, preference
from mtl_jax.weighting._qp import box_qp, normalize_gram

__all__ = ["dualproj_weights"]


def dualproj_weights(
    gram: jax.typing.ArrayLike,
    pref_vector: jax.typing.ArrayLike | None = None,
    *,
    reg_eps: float = 1e-4,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
) -> jax.Array:
    """DualProj task weights for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ``.
      pref_vector: ``[K]`` preference ``p`` (default uniform ``1/K``: the mean gradient).
      reg_eps: ridge added to the trace-normalised Gram matrix.
      num_iters: cap on the first-order iterations of :func:`box_qp`.
      tol: stopping tolerance of :func:`box_qp`.
      polish_iters: cap on the active-set steps of :func:`box_qp`.

    Returns:
      ``[K]`` weights ``w ≥ p`` with ``Jᵀw`` the projection; ``G w ≥ 0`` up to the
      solver's tolerance and the ridge, ``(G w)_k ≥ −reg_eps·tr(G)·w_k`` (the KKT
      conditions of the ridged problem; ``reg_eps=0`` gives exact non-conflict).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import dualproj_weights
      >>> w = dualproj_weights(jnp.array([[1.0, -2.0], [-2.0, 8.0]]), reg_eps=0.0)
      >>> [round(float(x), 3) for x in w]
      [1.0, 0.5]
    """
    g = as_gram(gram, symmetrize=False)
    if reg_eps < 0:
        raise ValueError(f"reg_eps must be non-negative, got {reg_eps!r}")
    gn = normalize_gram(g, reg_eps)
    p = preference(pref_vector, g.shape[0], gn.dtype, default=1.0 / g.shape[0])
    return box_qp(gn, p, num_iters=num_iters, tol=tol, polish_iters=polish_iters)
