"""Nash-MTL weights: the Nash bargaining solution ``G α = 1/α``, ``α > 0``.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022,
https://arxiv.org/abs/2202.01017.

The bargaining solution over the ball ``‖d‖ ≤ ε`` is ``d = Jᵀα`` with
``α_i (Gα)_i = 1`` (Theorem 5.1). The paper approximates it by a sequence of
convex programmes (CCP, solved by cvxpy/ECOS) started from the previous step's
``α``. ``G α = 1/α`` is the stationarity condition of the strictly convex
``½αᵀGα − Σ log α_i``, so here it is solved directly by Newton's method with a
line search (:func:`mtl_jax.weighting._fairgrad.solve_alpha_fair` with α-fairness
parameter 1), which reaches the fixed point to float32 precision where the CCP
stops at the authors' tolerance (``‖Gα − 1/α‖ < 1e-3``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._fairgrad import solve_alpha_fair
from mtl_jax.weighting._gram import as_gram, check_presence, restrict_gram

__all__ = ["nash_mtl_weights"]


def nash_mtl_weights(
    gram: jax.typing.ArrayLike,
    *,
    max_norm: float = 0.0,
    init: jax.typing.ArrayLike | None = None,
    reg_eps: float = 1e-5,
    num_iters: int = 20,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Nash-MTL task weights for a Gram matrix.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ``.
      max_norm: if positive, the weights are scaled down so that the update norm
        ``‖Jᵀα‖ = √(αᵀGα)`` is at most ``max_norm`` (the authors' clipping).
      init: ``[K]`` positive warm start (the previous solution), or None.
      reg_eps: ridge on the trace-normalised Gram matrix (keeps ``α`` finite when
        the gradients are linearly dependent).
      num_iters: Newton iterations.
      presence: optional ``[K]`` boolean mask. Absent tasks get weight exactly 0
        and the bargaining is between the present ones (the ``|S|``-task problem;
        ``init`` is read on them only).

    Returns:
      ``[K]`` weights ``α`` with ``α ∘ (Gα) ≈ 1`` (before clipping); all NaN if ``G``
      has a non-finite entry among the present tasks.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import nash_mtl_weights
      >>> a = nash_mtl_weights(jnp.array([[4.0, 0.0], [0.0, 1.0]]), reg_eps=0.0)
      >>> [round(float(x), 4) for x in a]
      [0.5, 1.0]
    """
    if not max_norm >= 0:
        raise ValueError(f"max_norm must be non-negative, got {max_norm!r}")
    g = as_gram(gram)
    m = check_presence(presence, g.shape[0])
    alpha = solve_alpha_fair(g, 1.0, init=init, reg_eps=reg_eps, num_iters=num_iters, presence=m)
    g = restrict_gram(g, m)
    if max_norm > 0:
        alpha = clip_update_norm(g, alpha, max_norm)
    return alpha


def clip_update_norm(gram: jax.Array, weights: jax.Array, max_norm: float) -> jax.Array:
    """Scales ``weights`` so that ``‖Jᵀw‖ = √(wᵀGw) ≤ max_norm``."""
    g = jnp.asarray(gram, weights.dtype)
    norm = jnp.sqrt(jnp.maximum(weights @ g @ weights, 0.0))
    factor = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
    return weights * factor
