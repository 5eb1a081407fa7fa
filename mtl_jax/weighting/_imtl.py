"""IMTL-G: the aggregate whose projections onto every task's unit gradient are equal.

Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr.

The paper asks for ``g = Σ_k α_k g_k`` with ``Σ_k α_k = 1`` and equal projections
``⟨g, u_k⟩`` onto the unit gradients ``u_k = g_k / ‖g_k‖``, and solves it with the
closed form ``α_{2:K} = g_1 Uᵀ (D Uᵀ)⁻¹`` (``D``, ``U``: differences to task 1).
On the Gram matrix the same conditions read ``G α = λ d`` with ``d_k = ‖g_k‖``, so
``α ∝ G⁻¹ d`` normalised to sum to 1. With linearly dependent gradients ``G`` is
singular; like torchjd (Quinton & Rey, https://arxiv.org/abs/2406.16232) the
pseudo-inverse is used, and the weights are all zero when ``G⁺ d`` sums to zero
(e.g. exactly opposite gradients: the tasks are Pareto-stationary).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import (
    all_present,
    as_gram,
    check_presence,
    nan_unless_finite,
    restrict_gram,
)

__all__ = ["imtl_weights"]


def imtl_weights(
    gram: jax.typing.ArrayLike,
    *,
    rtol: float | None = None,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """IMTL-G task weights ``α ∝ G⁺ d`` with ``Σ α = 1``, ``d_k = sqrt(G_kk)``.

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      rtol: relative cut-off on the eigenvalues of ``G`` in the pseudo-inverse;
        ``None`` uses :func:`jax.numpy.linalg.pinv`'s default (``10 K ε``).
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0
        and the weights of the present ones are those of the ``|S|``-task problem
        on their Gram matrix.

    Returns:
      ``[K]`` weights summing to 1, or all zeros when no normalisable solution
      exists (``|Σ G⁺ d| ≤ 10⁻⁶ Σ |G⁺ d|``, which includes zero gradients); all
      NaN if ``G`` has a non-finite entry among the present tasks.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import imtl_weights
      >>> g = jnp.array([[1.0, 0.0], [0.0, 4.0]])  # orthogonal, norms 1 and 2
      >>> [round(float(x), 3) for x in imtl_weights(g)]
      [0.667, 0.333]
    """
    g = as_gram(gram, symmetrize=False)
    m = check_presence(presence, g.shape[0])
    g = restrict_gram(g, m)
    # The pseudo-inverse leaves rounding noise on the zeroed rows: absent is exactly 0.
    w = jnp.where(all_present(m, g.shape[0]), _imtl(g, rtol), 0.0)
    return nan_unless_finite(w, g)


@functools.partial(jax.jit, static_argnums=1)
def _imtl(g: jax.Array, rtol: float | None) -> jax.Array:
    g = 0.5 * (g + g.T)
    d = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))
    v = jnp.linalg.pinv(g, rtol=rtol, hermitian=True) @ d
    total = jnp.sum(v)
    ok = jnp.abs(total) > 1e-6 * jnp.sum(jnp.abs(v))
    return jnp.where(ok, v / jnp.where(ok, total, 1.0), 0.0)
