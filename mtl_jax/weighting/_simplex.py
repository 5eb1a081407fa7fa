"""Euclidean projection onto the probability simplex (sort-based, O(K log K)).

Held, Wolfe & Crowder (1974); Duchi et al., "Efficient Projections onto the
l1-Ball for Learning in High Dimensions", ICML 2008. Written here rather than
taken from ``optax.projections`` so that it runs under JAX's strict dtype
promotion, which the optax version does not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["project_simplex"]


def project_simplex(v: jax.typing.ArrayLike, *, scale: float = 1.0) -> jax.Array:
    """``argmin_{w ≥ 0, Σw = scale} ‖w − v‖₂`` for a 1-D ``v``."""
    v = jnp.asarray(v)
    if v.ndim != 1:
        raise ValueError(f"project_simplex expects a 1-D array, got shape {v.shape}")
    u = jnp.sort(v)[::-1]
    css = jnp.cumsum(u) - scale
    ind = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)
    cond = u - css / ind > 0
    rho = jnp.max(jnp.where(cond, jnp.arange(v.shape[0]), 0))
    theta = css[rho] / (rho + 1).astype(v.dtype)
    return jnp.maximum(v - theta, 0.0)
