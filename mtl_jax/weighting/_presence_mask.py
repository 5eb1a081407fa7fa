"""The ``presence=`` argument of the weighting functions added for the 2025 baselines."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["as_presence"]


def as_presence(presence: jax.typing.ArrayLike | None, k: int) -> jax.Array:
    """``presence`` as a ``[K]`` bool array (all ``True`` when ``None``).

    Raises:
      ValueError: if ``presence`` is not a ``[K]`` array.
    """
    if presence is None:
        return jnp.ones((k,), bool)
    p = jnp.asarray(presence)
    if p.shape != (k,):
        raise ValueError(f"presence must have shape ({k},) (one flag per task), got {p.shape}")
    return p.astype(bool)
