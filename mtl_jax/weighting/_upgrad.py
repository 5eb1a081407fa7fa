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

from mtl_jax.weighting._gram import as_gram, preference
from mtl_jax.weighting._qp import box_qp, normalize_gram

__all__ = ["upgrad_weights"]


def upgrad_weights(
    gram: jax.typing.ArrayLike,
    pref_vector: jax.typing.ArrayLike | None = None,
    *,
    reg_eps: float = 1e-4,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
) -> jax.Array:
    """UPGrad task weights for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ``.
      pref_vector: ``[K]`` preference ``p`` (default uniform ``1/K``).
      reg_eps: ridge added to the trace-normalised Gram matrix.
      num_iters: cap on the first-order iterations of :func:`box_qp`.
      tol: stopping tolerance of :func:`box_qp`.
      polish_iters: cap on the active-set steps of :func:`box_qp`.

    Returns:
      ``[K]`` weights ``w`` with ``Jᵀw`` the UPGrad update; ``G w ≥ 0`` up to the
      solver's tolerance and the ridge: the KKT conditions of the ridged problem give
      ``(G w)_k ≥ −reg_eps·tr(G)·w_k``, so a task whose squared gradient norm is
      below ``reg_eps·tr(G)`` can see a small conflict (pass ``reg_eps=0`` for exact
      non-conflict). ``w ≥ p`` elementwise.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import upgrad_weights
      >>> w = upgrad_weights(jnp.array([[1.0, 0.0], [0.0, 1.0]]))
      >>> [round(float(x), 3) for x in w]
      [0.5, 0.5]
    """
    g = as_gram(gram, symmetrize=False)
    if reg_eps < 0:
        raise ValueError(f"reg_eps must be non-negative, got {reg_eps!r}")
    gn = normalize_gram(g, reg_eps)
    p = preference(pref_vector, g.shape[0], gn.dtype, default=1.0 / g.shape[0])
    v = box_qp(gn, jnp.diag(p), num_iters=num_iters, tol=tol, polish_iters=polish_iters)
    return jnp.sum(v, axis=0)
