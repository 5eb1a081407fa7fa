"""Constant weighting: fixed, user-chosen task weights.

The update is ``Σ_k c_k ∇L_k`` for a fixed vector ``c``: the linear scalarisation
``Σ_k c_k L_k``, the simplest member of every multi-task library (torchjd's
``Constant`` aggregator and scalarizer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["constant_weights"]


def constant_weights(
    weights: jax.typing.ArrayLike, *, presence: jax.typing.ArrayLike | None = None
) -> jax.Array:
    """The fixed weights ``c``, with an absent task's weight set to 0.

    Args:
      weights: ``[K]`` weights ``c``.
      presence: ``[K]`` bool, which tasks have data in this batch (``None``: all).

    Returns:
      ``[K]`` weights ``c_k`` for the present tasks and ``0`` for the absent ones
      (the weights are not renormalised: a fixed scalarisation restricted to the
      present tasks is ``Σ_{k ∈ S} c_k L_k``).

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import constant_weights
      >>> w = constant_weights(jnp.array([0.2, 0.8]), presence=jnp.array([True, False]))
      >>> [round(float(x), 3) for x in w]
      [0.2, 0.0]
    """
    c = jnp.asarray(weights)
    if c.ndim != 1:
        raise ValueError(f"weights must be a [K] vector, got shape {c.shape}")
    c = c.astype(jnp.promote_types(c.dtype, jnp.float32))
    p = as_presence(presence, c.shape[0])
    return jnp.where(p, c, jnp.zeros_like(c))
