"""ConFIG weights: the conflict-free direction as a function of the Gram matrix.

Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed
Neural Networks", 2024, https://arxiv.org/abs/2408.11104 (Eq. 2).

With unit gradients ``ĝ_i = g_i / ‖g_i‖`` stacked in ``Û``, ConFIG takes the
direction ``u = Û⁺ p`` (``p = 1`` by default: equal cosine with every task) and
the update ``d = (Σ_i ⟨g_i, û⟩) û`` with ``û = u/‖u‖``. Because
``Û⁺ = Ûᵀ (ÛÛᵀ)⁺``, everything is a function of ``G``: with ``D = diag(1/‖g_i‖)``
and ``Ĝ = DGD``, ``a = Ĝ⁺p``, ``u = Jᵀ D a``, ``‖u‖² = aᵀĜa`` and
``d = Jᵀ w`` with ``w = (1ᵀ G D a / ‖u‖²) · D a``.

The pseudo-inverse is taken by an eigendecomposition of ``Ĝ`` discarding
eigenvalues below ``K · eps · λ_max`` (float32 Gram matrices carry no information
below that). Zero gradients are dropped (their unit vector is 0, as in the
authors' code and torchjd); if ``u = 0`` (e.g. two opposite gradients) the update
is 0.
"""

from __future__ import annotations

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

__all__ = ["conflict_free_weights", "psd_pinv"]


def psd_pinv(gram: jax.Array) -> jax.Array:
    """Pseudo-inverse of a symmetric PSD matrix, cutting eigenvalues ``≤ K·eps·λ_max``."""
    g = 0.5 * (gram + gram.T)
    lam, vec = jnp.linalg.eigh(g)
    tol = jnp.max(lam) * g.shape[0] * jnp.finfo(g.dtype).eps
    keep = lam > jnp.maximum(tol, jnp.finfo(g.dtype).tiny)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    return (vec * jnp.reshape(inv, (1, -1))) @ vec.T


def conflict_free_weights(
    gram: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """ConFIG task weights for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ``.
      pref_vector: ``[K]`` target cosines ``p`` (default ones); only their ratios matter.
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0
        and the weights of the present ones are those of the ``|S|``-task problem
        on their Gram matrix.

    Returns:
      ``[K]`` weights ``w`` with ``Jᵀw`` the ConFIG update; all NaN if ``G`` (of the
      present tasks) or ``p`` has a non-finite entry.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import conflict_free_weights
      >>> w = conflict_free_weights(jnp.array([[1.0, 0.0], [0.0, 4.0]]))
      >>> [round(float(x), 3) for x in w]
      [1.5, 0.75]
    """
    g = as_gram(gram)
    k = g.shape[0]
    m = check_presence(presence, k)
    g = restrict_gram(g, m)
    p = preference(pref_vector, k, g.dtype, default=1.0, presence=m)
    tiny = jnp.finfo(g.dtype).tiny
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))
    dinv = jnp.where(norms > tiny, 1.0 / jnp.where(norms > tiny, norms, 1.0), 0.0)
    gu = g * jnp.reshape(dinv, (k, 1)) * jnp.reshape(dinv, (1, k))
    a = psd_pinv(gu) @ p
    u2 = a @ gu @ a
    da = dinv * a
    length = jnp.sum(g @ da)
    ok = u2 > jnp.finfo(g.dtype).eps * jnp.maximum(jnp.sum(p * p), tiny)
    w = jnp.where(ok & all_present(m, k), (length / jnp.where(ok, u2, 1.0)) * da, 0.0)
    return nan_unless_finite(w, g, p)
