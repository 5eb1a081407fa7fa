"""MGDA: the minimum-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS
2018, https://arxiv.org/abs/1810.04650.

The weights solve the quadratic programme ``min_{w ∈ Δ_K} ½ wᵀ G w`` on the
probability simplex, where ``G = J Jᵀ``. The paper solves it with Frank–Wolfe;
here the same convex programme is solved by :func:`~mtl_jax.weighting.simplex_qp`
(accelerated projected gradient with restart on the problem rescaled by
``sqrt(diag G)``, then an exact active-set polish; see ``_qp.py``), which is
jit-compatible and stays accurate when the gradient norms span orders of
magnitude (cosine ≥ 0.9999 to the float64 min-norm direction for norm ratios up
to 10³ in float32). Gradient normalisation
uses the normalisers ``c_k`` of the authors' code: the simplex weights ``w`` are
found on the normalised gradients ``g_k / c_k`` and returned as ``w_k / c_k``, so
that ``Σ_k (w_k / c_k) g_k`` is the min-norm point of the *normalised* gradients
(LibMTL's full-parameter behaviour; it keeps ``⟨g_k, d⟩ ≥ c_k ‖d‖² ≥ 0``). Sener &
Koltun's own training script instead multiplies the raw losses by ``w_k``; multiply
the returned weights by :func:`mgda_normalizers` to get that variant.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import check_presence, nan_unless_finite, restrict_gram
from mtl_jax.weighting._qp import simplex_qp

__all__ = ["min_norm_simplex", "mgda_normalizers", "mgda_weights"]

Normalization = Literal["none", "l2", "loss", "loss+"]
_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def min_norm_simplex(
    gram: jax.typing.ArrayLike,
    *,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Solves ``min_{w ∈ Δ} ½ wᵀ G w``: the min-norm point of the gradients' convex hull.

    Args:
      gram: a ``[K, K]`` symmetric positive semi-definite matrix.
      num_iters: cap on the solver's accelerated projected-gradient iterations.
      tol: stopping tolerance of :func:`~mtl_jax.weighting.simplex_qp`.
      polish_iters: cap on its active-set steps.
      presence: optional ``[K]`` boolean mask: the simplex is that of the present
        tasks, absent ones get weight 0.

    Returns:
      ``[K]`` weights on the probability simplex. A zero ``G`` gives uniform weights.
    """
    return simplex_qp(
        gram, num_iters=num_iters, tol=tol, polish_iters=polish_iters, presence=presence
    )


def mgda_normalizers(
    gram: jax.typing.ArrayLike, losses: jax.typing.ArrayLike, *, normalization: Normalization
) -> jax.Array:
    """Per-task gradient normalisers ``c_k`` of Sener & Koltun's code.

    ``"none"``: 1; ``"l2"``: ``‖g_k‖``; ``"loss"``: ``L_k``; ``"loss+"``: ``L_k ‖g_k‖``.
    Zero normalisers are replaced by 1 so that no division produces NaN.
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    g = jnp.asarray(gram)
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(g), 0.0))
    losses = jnp.asarray(losses, g.dtype)
    c = {
        "none": jnp.ones_like(norms),
        "l2": norms,
        "loss": losses,
        "loss+": losses * norms,
    }[normalization]
    # Zero normalisers become 1; a NaN one stays NaN (no plausible number from bad input).
    return jnp.where(jnp.isnan(c) | (jnp.abs(c) > jnp.finfo(g.dtype).tiny), c, 1.0)


def mgda_weights(
    gram: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike | None = None,
    *,
    normalization: Normalization = "none",
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """MGDA task weights for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      losses: ``[K]`` losses, needed by the ``"loss"`` and ``"loss+"`` normalisations.
      normalization: one of ``"none"``, ``"l2"``, ``"loss"``, ``"loss+"``.
      num_iters: cap on the simplex QP solver's first-order iterations.
      tol: the solver's stopping tolerance (see :func:`~mtl_jax.weighting.simplex_qp`).
      polish_iters: cap on the solver's active-set steps.
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0
        and the min-norm point is that of the present tasks' gradients (the
        ``|S|``-task problem); no task present gives zeros.

    Returns:
      ``[K]`` weights ``w`` such that ``Σ_k w_k g_k`` is the min-norm point of the
      convex hull of the (normalised) gradients, expressed on the raw gradients; all
      NaN if ``G`` or the losses have a non-finite entry among the present tasks.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import mgda_weights
      >>> g = jnp.array([[1.0, 0.0], [0.0, 4.0]])
      >>> [round(float(x), 3) for x in mgda_weights(g)]
      [0.8, 0.2]
    """
    g = jnp.asarray(gram)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be square [K, K], got shape {g.shape}")
    k = g.shape[0]
    m = check_presence(presence, k)
    g = restrict_gram(g, m)
    if losses is None:
        if normalization in ("loss", "loss+"):
            raise ValueError(f"normalization={normalization!r} needs the losses")
        losses = jnp.ones(g.shape[:1], g.dtype)
    losses = jnp.asarray(losses)
    if m is not None:
        losses = jnp.where(m, losses, jnp.ones((), losses.dtype))
    c = mgda_normalizers(g, losses, normalization=normalization)
    c2 = jnp.reshape(c, (-1, 1)) * jnp.reshape(c, (1, -1))
    w = min_norm_simplex(
        g / c2, num_iters=num_iters, tol=tol, polish_iters=polish_iters, presence=m
    )
    return nan_unless_finite(w / c, g, losses)
