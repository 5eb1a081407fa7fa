"""Aligned-MTL weights: align the principal components of the task gradients.

Senushkin et al., "Independent Component Alignment for Multi-Task Learning",
CVPR 2023, https://arxiv.org/abs/2305.19000 (Algorithm 1).

With ``G = J Jᵀ = V Λ Vᵀ`` (rank ``r``), the aligned gradients are
``Ĵ = B J`` with ``B = √λ_s · V_r Λ_r^{-1/2} V_rᵀ``: ``Ĵ Ĵᵀ = λ_s · P_r`` has all
its non-zero eigenvalues equal (condition number 1), i.e. the aligned gradients
are orthogonal with equal norms ``√λ_s`` on the gradients' span. The update is
``Ĵᵀ p = Jᵀ (B p)``, so the weights are ``w = B p``. ``λ_s`` is the smallest
retained eigenvalue (``"min"``, the paper and LibMTL), their median (``"median"``)
or mean (``"rmse"``), as in torchjd. Eigenvalues below ``K · eps · λ_max`` count as
zero; a zero ``G`` gives ``w = p``.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import (
    all_present,
    as_gram,
    check_presence,
    nan_unless_finite,
    preference,
    restrict_gram,
)

__all__ = ["aligned_mtl_weights"]

ScaleMode = Literal["min", "median", "rmse"]
_SCALE_MODES = ("min", "median", "rmse")


def aligned_mtl_weights(
    gram: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    scale_mode: ScaleMode = "min",
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Aligned-MTL task weights ``w = B p`` for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ``.
      pref_vector: ``[K]`` task preferences ``p`` (default ones, as LibMTL and the
        authors' code, which sum the aligned gradients; torchjd uses ``1/K``).
      scale_mode: ``"min"``, ``"median"`` or ``"rmse"``: which eigenvalue sets the
        norm of the aligned gradients.
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0
        and the weights of the present ones are those of the ``|S|``-task problem
        on their Gram matrix.

    Returns:
      ``[K]`` weights; the update is ``Jᵀw``; all NaN if ``G`` (of the present
      tasks) or ``p`` has a non-finite entry.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aligned_mtl_weights
      >>> w = aligned_mtl_weights(jnp.array([[4.0, 0.0], [0.0, 1.0]]))
      >>> [round(float(x), 3) for x in w]
      [0.5, 1.0]
    """
    if scale_mode not in _SCALE_MODES:
        raise ValueError(f"scale_mode must be one of {_SCALE_MODES}, got {scale_mode!r}")
    g = as_gram(gram)
    k = g.shape[0]
    m = check_presence(presence, k)
    g = restrict_gram(g, m)
    p = preference(pref_vector, k, g.dtype, default=1.0, presence=m)
    lam, vec = jnp.linalg.eigh(g)
    tiny = jnp.finfo(g.dtype).tiny
    tol = jnp.maximum(jnp.max(lam) * k * jnp.finfo(g.dtype).eps, tiny)
    keep = lam > tol
    rank = jnp.sum(keep)
    safe = jnp.where(keep, lam, 1.0)
    if scale_mode == "min":
        scale = jnp.min(jnp.where(keep, lam, jnp.inf))
    elif scale_mode == "rmse":
        scale = jnp.sum(jnp.where(keep, lam, 0.0)) / jnp.maximum(rank, 1)
    else:  # lower median of the retained eigenvalues, as torch.median
        ordered = jnp.sort(jnp.where(keep, lam, jnp.inf))
        scale = ordered[jnp.maximum(rank - 1, 0) // 2]
    inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(safe), 0.0)
    b = (vec * jnp.reshape(inv_sqrt, (1, k))) @ vec.T
    w = jnp.sqrt(jnp.where(rank > 0, scale, 1.0)) * (b @ p)
    w = jnp.where(all_present(m, k), jnp.where(rank > 0, w, p), 0.0)
    return nan_unless_finite(w, g, p)
