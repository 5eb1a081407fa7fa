"""The ``presence=`` argument of the weighting functions added for the 2025 baselines."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["as_presence", "project_present_simplex"]


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


def project_present_simplex(v: jax.Array, present: jax.Array) -> jax.Array:
    """Euclidean projection of ``v`` onto the simplex of the present tasks (0 elsewhere).

    ``argmin_{w ≥ 0, Σ_{k ∈ S} w_k = 1, w_k = 0 (k ∉ S)} ‖w − v‖``; all zeros when no
    task is present.
    """
    from mtl_jax.weighting._simplex import project_simplex

    # The projection commutes with shifts (Π(v + c1) = Π(v)): shifting max(v_S) to 0
    # keeps float32 precise when |v| is large (|v| ~ 1e10 would otherwise round the
    # threshold by more than the simplex's width). The threshold is then at least
    # −1 > min(v_S) − 2, so an absent entry set to min(v_S) − 2 is clipped to 0.
    any_present = jnp.any(present)
    top = jnp.max(jnp.where(present, v, jnp.asarray(-jnp.inf, v.dtype)))
    v = v - jnp.where(any_present, top, jnp.zeros((), v.dtype))
    smallest = jnp.min(jnp.where(present, v, jnp.asarray(jnp.inf, v.dtype)))
    low = jnp.where(any_present, smallest - 2.0, jnp.zeros((), v.dtype))
    w = project_simplex(jnp.where(present, v, low))
    return jnp.where(present, w, jnp.zeros((), v.dtype))
