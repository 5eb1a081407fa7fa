"""CR-MOGM: an exponential moving average of MGDA-type task weights.

Zhou, Zhang, Jiang, Guo, Wei, Zhao & Kwok, "On the Convergence of Stochastic
Multi-Objective Gradient Manipulation and Beyond", NeurIPS 2022,
https://proceedings.neurips.cc/paper_files/paper/2022/hash/f91bd64a3620aad8e70a27ad9cb3ca57-Abstract-Conference.html
(torchjd's ``CRMOGMWeighting``). Stochastic MGDA weights ``λ̂_t`` computed on
mini-batch gradients are biased; CR-MOGM ("correlation-reduced") smooths them,

    λ_t = α λ_{t−1} + (1 − α) λ̂_t,

and descends along ``Σ_k λ_{t,k} g_k``. ``λ_0`` is a given vector or ``λ̂_1``
(then the first smoothed weights equal ``λ̂_1``).

:func:`mgda_present_weights` is the MGDA weighting over a subset of present
tasks that the balancer smooths by default.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import as_gram, nan_unless_finite, restrict_gram
from mtl_jax.weighting._mgda import Normalization, mgda_normalizers
from mtl_jax.weighting._presence_mask import as_presence
from mtl_jax.weighting._qp import simplex_qp

__all__ = ["cr_mogm_update", "mgda_present_weights"]


def cr_mogm_update(
    previous: jax.typing.ArrayLike,
    fresh: jax.typing.ArrayLike,
    *,
    alpha: float = 0.9,
    first: jax.typing.ArrayLike | bool = False,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """One CR-MOGM step ``λ_t = α λ_{t−1} + (1 − α) λ̂_t``.

    Args:
      previous: ``[K]`` smoothed weights ``λ_{t−1}``.
      fresh: ``[K]`` new weights ``λ̂_t``.
      alpha: ``α ∈ [0, 1]``; 0 returns ``λ̂_t``, 1 freezes ``λ_{t−1}``.
      first: ``[K]`` (or scalar) bool, where ``λ_{t−1}`` does not exist yet: there
        ``λ_t = λ̂_t``.
      presence: ``[K]`` bool, which tasks have data (``None``: all); an absent
        task keeps ``λ_{t−1}``.

    Returns:
      ``[K]`` smoothed weights ``λ_t`` (the state to carry; the weights to apply
      are these on the present tasks and 0 on the absent ones).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    lam_hat = jnp.asarray(fresh)
    prev = jnp.asarray(previous, lam_hat.dtype)
    p = as_presence(presence, lam_hat.shape[0])
    smoothed = alpha * prev + (1.0 - alpha) * lam_hat
    new = jnp.where(jnp.asarray(first, bool), lam_hat, smoothed)
    return jnp.where(p, new, prev)


def mgda_present_weights(
    gram: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike | None = None,
    *,
    normalization: Normalization = "none",
    presence: jax.typing.ArrayLike | None = None,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
) -> jax.Array:
    """MGDA weights (as :func:`mgda_weights`) with the simplex over the present tasks only.

    The restricted problem ``min_{w ∈ Δ_S} ½ wᵀGw`` is solved on all ``K``
    coordinates by adding the linear term ``M Σ_{k ∉ S} w_k`` with
    ``M = 1 + 2 max_k G'_kk`` (``G'`` the normalised Gram matrix): at the
    restricted optimum the KKT multiplier is ``w*ᵀG'w* ≤ max_k G'_kk < M``, so
    ``w_k = 0`` satisfies the absent tasks' KKT conditions and, the problem being
    convex, the penalised optimum is the restricted one.

    Returns:
      ``[K]`` weights, 0 on the absent tasks (all 0 when none is present); all NaN
      if the Gram matrix or the losses of the present tasks have a non-finite entry.
    """
    g = as_gram(gram)
    k = g.shape[0]
    p = as_presence(presence, k)
    if losses is None:
        if normalization in ("loss", "loss+"):
            raise ValueError(f"normalization={normalization!r} needs the losses")
        losses = jnp.ones((k,), g.dtype)
    g = restrict_gram(g, p)
    losses = jnp.where(p, jnp.asarray(losses, g.dtype), 1.0)
    c = mgda_normalizers(g, losses, normalization=normalization)
    gn = g / (c[:, None] * c[None, :])
    penalty = 1.0 + 2.0 * jnp.max(jnp.diagonal(gn))
    lin = jnp.where(p, 0.0, penalty)
    n = jnp.maximum(jnp.sum(p.astype(g.dtype)), 1.0)
    init = jnp.where(p, 1.0 / n, 0.0)
    w = simplex_qp(gn, lin, init=init, num_iters=num_iters, tol=tol, polish_iters=polish_iters)
    return nan_unless_finite(jnp.where(p, w / c, 0.0), g, losses)
