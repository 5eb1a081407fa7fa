"""COSMOS and PBI: preference-vector scalarisations of the task losses.

COSMOS: Ruchte & Grabocka, "Scalable Pareto Front Approximation for Deep
Multi-Objective Learning", ICDM 2021, https://arxiv.org/abs/2103.13392 (eq. 3):

    f(L) = rᵀL − λ cos(r, L),   cos(r, L) = rᵀL / (‖r‖ ‖L‖),

a linear scalarisation with preference ``r`` that also rewards aligning the loss
vector with ``r``, which spreads the solutions along the Pareto front.

PBI (penalty-based boundary intersection): Zhang & Li, "MOEA/D: A
Multiobjective Evolutionary Algorithm Based on Decomposition", IEEE TEVC 2007,
https://doi.org/10.1109/TEVC.2007.892759. With the reference point ``z*`` and the
unit preference direction ``ŵ = w / ‖w‖``,

    d₁ = (L − z*)ᵀŵ,   d₂ = ‖(L − z*) − d₁ ŵ‖,   f(L) = d₁ + θ d₂.

As a balancer both are "loss" methods: the update is ``∇_θ f(L(θ)) = Σ_k w_k ∇L_k``
with ``w = ∂f/∂L`` at the current losses. With task presence the absent tasks'
coordinates are removed from ``L``, ``r`` (``w``) and ``z*``: the scalarisation of
the present tasks alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["cosmos_objective", "cosmos_weights", "pbi_objective", "pbi_weights"]

_COS_EPS = 1e-8  # floor on ‖r‖‖L‖ (torch.nn.functional.cosine_similarity's default eps)
_PBI_EPS = 1e-12  # added under d₂'s square root (keeps its gradient finite at d₂ = 0)


def _inputs(losses, pref, presence):
    ls = jnp.asarray(losses)
    ls = ls.astype(jnp.promote_types(ls.dtype, jnp.float32))
    if ls.ndim != 1:
        raise ValueError(f"losses must be a [K] vector, got shape {ls.shape}")
    k = ls.shape[0]
    p = as_presence(presence, k)
    if pref is None:
        r = p.astype(ls.dtype) / jnp.maximum(jnp.sum(p.astype(ls.dtype)), 1.0)
    else:
        r = jnp.asarray(pref, ls.dtype)
        if r.shape != (k,):
            raise ValueError(f"pref_vector must have shape ({k},), got {r.shape}")
    return jnp.where(p, ls, 0.0), jnp.where(p, r, 0.0), p


def cosmos_objective(
    losses: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    lambda_: float = 1.0,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """COSMOS's scalarisation ``rᵀL − λ rᵀL / max(‖r‖‖L‖, 10⁻⁸)``.

    Args:
      losses: ``[K]`` losses ``L``.
      pref_vector: ``[K]`` preference ``r`` (default uniform over the present tasks).
      lambda_: ``λ ≥ 0``, the weight of the cosine term (0: linear scalarisation).
      presence: ``[K]`` bool, which tasks have data (``None``: all).

    Returns:
      The scalar objective (differentiable in ``losses``).
    """
    if not lambda_ >= 0:
        raise ValueError(f"lambda_ must be non-negative, got {lambda_!r}")
    ls, r, _ = _inputs(losses, pref_vector, presence)
    dot = jnp.dot(r, ls)
    norms = jnp.sqrt(jnp.maximum(jnp.sum(r * r) * jnp.sum(ls * ls), _COS_EPS**2))
    return dot - lambda_ * dot / norms


def cosmos_weights(
    losses: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    lambda_: float = 1.0,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """``∂f/∂L`` of :func:`cosmos_objective`: the task weights of its gradient (0 if absent).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import cosmos_weights
      >>> w = cosmos_weights(jnp.array([1.0, 1.0]), pref_vector=jnp.array([0.5, 0.5]))
      >>> [round(float(x), 3) for x in w]  # L ∥ r: the cosine term is stationary
      [0.5, 0.5]
    """
    ls, r, p = _inputs(losses, pref_vector, presence)
    w = jax.grad(lambda x: cosmos_objective(x, pref_vector=r, lambda_=lambda_))(ls)
    return jnp.where(p, w, 0.0)


def pbi_objective(
    losses: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    theta: float = 5.0,
    reference: jax.typing.ArrayLike | None = None,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """PBI's scalarisation ``d₁ + θ d₂`` (``d₂`` with ``10⁻¹²`` under its square root).

    Args:
      losses: ``[K]`` losses ``L``.
      pref_vector: ``[K]`` non-negative direction ``w`` (default uniform over the
        present tasks); normalised to unit length.
      theta: ``θ ≥ 0``, the penalty on the distance to the preference line (paper: 5).
      reference: ``[K]`` reference point ``z*`` (default the origin: the losses
        are taken as non-negative).
      presence: ``[K]`` bool, which tasks have data (``None``: all).

    Returns:
      The scalar objective (differentiable in ``losses``).
    """
    if not theta >= 0:
        raise ValueError(f"theta must be non-negative, got {theta!r}")
    ls, w, p = _inputs(losses, pref_vector, presence)
    if reference is not None:
        z = jnp.asarray(reference, ls.dtype)
        if z.shape != ls.shape:
            raise ValueError(f"reference must have shape {ls.shape}, got {z.shape}")
        ls = jnp.where(p, ls - z, 0.0)
    norm = jnp.sqrt(jnp.sum(w * w))
    direction = w / jnp.where(norm > 0, norm, 1.0)
    d1 = jnp.dot(ls, direction)
    perp = ls - d1 * direction
    d2 = jnp.sqrt(jnp.sum(perp * perp) + _PBI_EPS)
    return d1 + theta * d2


def pbi_weights(
    losses: jax.typing.ArrayLike,
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    theta: float = 5.0,
    reference: jax.typing.ArrayLike | None = None,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """``∂f/∂L`` of :func:`pbi_objective`: the task weights of its gradient (0 if absent).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import pbi_weights
      >>> w = pbi_weights(jnp.array([1.0, 1.0]), pref_vector=jnp.array([1.0, 1.0]))
      >>> [round(float(x), 3) for x in w]  # on the preference line: ŵ
      [0.707, 0.707]
    """
    ls, w, p = _inputs(losses, pref_vector, presence)
    z = None
    if reference is not None:
        z = jnp.where(p, jnp.asarray(reference, ls.dtype), 0.0)
    grad = jax.grad(
        lambda x: pbi_objective(x, pref_vector=w, theta=theta, reference=z, presence=p)
    )(ls)
    return jnp.where(p, grad, 0.0)
