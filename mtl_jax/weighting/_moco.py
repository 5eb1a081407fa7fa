"""MoCo: MGDA on a tracked (moving-average) Jacobian, with tracked weights.

Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
Multi-objective Learning: A Provably Convergent Approach", ICLR 2023,
https://arxiv.org/abs/2210.04650 (Algorithm 1). Stochastic MGDA is biased
because its weights depend on the same noisy gradients they multiply. MoCo
tracks each task's gradient with a moving average and takes one projected step
on the MGDA weights per iteration:

    Y_{t+1} = Y_t − β_t (Y_t − ∇F(x_t; ξ_t))                    (tracking, eq. 8)
    λ_{t+1} = Π_Δ(λ_t − γ_t (Y_{t+1} Y_{t+1}ᵀ + ρ I) λ_t)        (weights, eq. 9)
    x_{t+1} = x_t − α_t Y_{t+1}ᵀ λ_{t+1}                         (update, eq. 10)

with ``Y`` the ``[K, P]`` tracked Jacobian (rows: tasks). The paper's analysis
also projects ``Y`` onto a bounded set; like the authors' code and LibMTL, that
projection is omitted here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence
from mtl_jax.weighting._presence_mask import as_presence, project_present_simplex

__all__ = ["moco_track", "moco_weight_step"]


def moco_track(
    tracked: list[jax.Array],
    jac_leaves: list[jax.Array],
    *,
    beta: jax.typing.ArrayLike,
    presence: jax.typing.ArrayLike | None = None,
) -> list[jax.Array]:
    """The tracking step ``Y ← Y − β (Y − J)`` on every leaf.

    Args:
      tracked: the leaves of ``Y``, each ``[K, ...]``.
      jac_leaves: the leaves of the current task Jacobian ``J``, shaped alike.
      beta: ``β_t``, a scalar or ``[K]`` (one per task) in ``[0, 1]``.
      presence: ``[K]`` bool, which tasks have data (``None``: all); an absent
        task's rows of ``Y`` are left unchanged.

    Returns:
      The new leaves of ``Y``.
    """
    if len(tracked) != len(jac_leaves):
        raise ValueError(f"{len(tracked)} tracked leaves but {len(jac_leaves)} Jacobian leaves")
    out = []
    for y, g in zip(tracked, jac_leaves):
        if y.shape != g.shape:
            raise ValueError(f"a tracked leaf has shape {y.shape} but the Jacobian's {g.shape}")
        k = y.shape[0]
        p = as_presence(presence, k)
        b = jnp.broadcast_to(jnp.asarray(beta, y.dtype), (k,))
        b = jnp.reshape(b, (k,) + (1,) * (y.ndim - 1))
        new = y - b * (y - g.astype(y.dtype))
        out.append(_presence.keep_absent(new, y, p))
    return out


def moco_weight_step(
    weights: jax.typing.ArrayLike,
    tracked_gram: jax.typing.ArrayLike,
    *,
    gamma: jax.typing.ArrayLike,
    rho: float = 0.0,
    projection: str = "simplex",
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """The weight step ``λ ← Π(λ − γ (Y Yᵀ + ρ I) λ)``.

    Args:
      weights: ``[K]`` current ``λ_t``.
      tracked_gram: ``[K, K]`` ``Y_{t+1} Y_{t+1}ᵀ``.
      gamma: ``γ_t > 0``.
      rho: ``ρ ≥ 0``.
      projection: ``"simplex"`` (the paper's ``Π_Δ``) or ``"softmax"`` (LibMTL:
        ``softmax`` of the stepped vector).
      presence: ``[K]`` bool, which tasks have data (``None``: all); the step and
        the map are over the present tasks and an absent task keeps ``λ_k``.

    Returns:
      ``[K]`` new weights (the absent tasks' entries carried over).
    """
    if projection not in ("simplex", "softmax"):
        raise ValueError(f"projection must be 'simplex' or 'softmax', got {projection!r}")
    if not rho >= 0:
        raise ValueError(f"rho must be non-negative, got {rho!r}")
    g = jnp.asarray(tracked_gram)
    g = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    lam = jnp.asarray(weights, g.dtype)
    p = as_presence(presence, g.shape[0])
    g = jnp.where(p[:, None] & p[None, :], g, 0.0)
    lam_p = jnp.where(p, lam, 0.0)
    stepped = lam_p - jnp.asarray(gamma, g.dtype) * (g @ lam_p + rho * lam_p)
    if projection == "simplex":
        new = project_present_simplex(stepped, p)
    else:
        new = _presence.masked_softmax(stepped, p)
    return jnp.where(p, new, lam)
