"""Scale-invariant (SI) weighting and IMTL-L, the loss-scale half of IMTL.

Scale-invariant loss: minimise ``Σ_k log L_k``. Its gradient is
``Σ_k ∇L_k / L_k``, so the task weights are ``w_k = 1 / L_k``; rescaling a loss
(``L_k → c L_k``) leaves the update unchanged. It is the "SI" baseline of
Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022,
https://arxiv.org/abs/2202.01017 (Section 6), and the geometric-mean loss up to
the factor ``1/K`` and a monotone transform.

IMTL-L: Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial
Multi-task Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr
(Section 3.2). Each task gets a learnable scale ``s_k`` and the scaled loss
``e^{s_k} L_k − s_k``: the task weights are ``w_k = e^{s_k}`` and
``∂/∂s_k = e^{s_k} L_k − 1``, so at a stationary point of ``s`` every scaled loss
``e^{s_k} L_k`` equals 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import nan_unless_finite
from mtl_jax.weighting._presence_mask import as_presence

__all__ = [
    "imtl_l_objective",
    "imtl_l_scale_grad",
    "imtl_l_weights",
    "scale_invariant_weights",
]


def scale_invariant_weights(
    losses: jax.typing.ArrayLike,
    *,
    eps: float = 1e-8,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """``w_k = 1 / max(L_k, ε)``: the weights of the gradient of ``Σ_k log L_k``.

    .. math::

        \\nabla_θ \\sum_k \\log L_k(θ) = \\sum_k \\frac{\\nabla_θ L_k(θ)}{L_k(θ)}.

    Non-finite losses: an infinite (or NaN) loss of a present task makes every
    weight NaN. The limit ``1/L_k → 0`` is not taken: unlike a learned
    log-variance (uncertainty weighting, FAMO, IMTL-L's ``s_k``), whose infinite
    value is a legitimate limit of a parameter, ``L_k`` is measured data, and an
    infinite loss means that task has diverged; weight 0 would drop it silently
    and ``∇L_k / L_k`` is itself ``∞/∞`` there. The training step's non-finite
    policy sees the NaN instead.

    Args:
      losses: ``[K]`` losses, which the method assumes positive.
      eps: floor on the losses, so that a zero (or negative) loss gives the finite
        weight ``1/ε`` instead of an infinite one.
      presence: ``[K]`` bool, which tasks have data (``None``: all); an absent
        task's weight is 0.

    Returns:
      ``[K]`` weights (all NaN if a present task's loss is not finite).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import scale_invariant_weights
      >>> scale_invariant_weights(jnp.array([0.5, 4.0])).tolist()
      [2.0, 0.25]
    """
    ls = jnp.asarray(losses)
    ls = ls.astype(jnp.promote_types(ls.dtype, jnp.float32))
    if ls.ndim != 1:
        raise ValueError(f"losses must be a [K] vector, got shape {ls.shape}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    p = as_presence(presence, ls.shape[0])
    w = jnp.where(p, 1.0 / jnp.maximum(ls, eps), 0.0)
    return nan_unless_finite(w, jnp.where(p, ls, 0.0))


def imtl_l_weights(
    log_scales: jax.typing.ArrayLike, *, presence: jax.typing.ArrayLike | None = None
) -> jax.Array:
    """IMTL-L's task weights ``w_k = e^{s_k}`` (0 for an absent task)."""
    s = jnp.asarray(log_scales)
    p = as_presence(presence, s.shape[0])
    return jnp.where(p, jnp.exp(s), 0.0)


def imtl_l_objective(
    log_scales: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    *,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """IMTL-L's scaled loss ``Σ_{k present} (e^{s_k} L_k − s_k)``.

    Args:
      log_scales: ``[K]`` learnable log-scales ``s``.
      losses: ``[K]`` losses ``L``.
      presence: ``[K]`` bool, which tasks have data (``None``: all). An absent
        task's ``s_k`` and ``L_k`` are replaced by 0 before use, so neither the
        value nor the gradient (0 there) sees a NaN in them.

    Returns:
      The scalar objective (differentiable in ``log_scales`` and ``losses``).
    """
    s = jnp.asarray(log_scales)
    p = as_presence(presence, s.shape[0])
    s = jnp.where(p, s, jnp.zeros((), s.dtype))
    ls = jnp.where(p, jnp.asarray(losses, s.dtype), jnp.zeros((), s.dtype))
    return jnp.sum(jnp.where(p, jnp.exp(s) * ls - s, 0.0))


def imtl_l_scale_grad(
    log_scales: jax.typing.ArrayLike,
    losses: jax.typing.ArrayLike,
    *,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Closed-form ``∂/∂s`` of :func:`imtl_l_objective`: ``e^{s_k} L_k − 1`` (0 if absent)."""
    s = jnp.asarray(log_scales)
    p = as_presence(presence, s.shape[0])
    ls = jnp.asarray(losses, s.dtype)
    return jnp.where(p, jnp.exp(s) * ls - 1.0, 0.0)
