"""Validation shared by the Gram-matrix weightings: shapes, preferences, presence, NaNs.

Three rules hold for every public Gram weighting (one mechanism each, here):

* **Concrete bad arguments raise.** A preference vector of the wrong shape, with a
  non-finite entry, or (where the method needs it) a negative entry or no positive
  entry, and a presence mask that is not boolean (or ``{0, 1}``), raise a
  ``ValueError`` naming the argument and its value.
* **Non-finite inputs give non-finite outputs.** A NaN or infinite entry in the
  Gram matrix of the *present* tasks (or in a traced preference) makes every
  weight NaN (:func:`nan_unless_finite`), so that a training step's non-finite
  policy sees it, never a plausible-looking number.
* **Absent tasks are removed from the problem** (:func:`restrict_gram`): their
  rows and columns of ``G`` are replaced by zeros (a NaN in an absent task's row
  does not leak), and the method sets their weights to exactly 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "all_present",
    "as_gram",
    "check_preference",
    "check_presence",
    "nan_unless_finite",
    "preference",
    "restrict_gram",
]


def as_gram(gram: jax.typing.ArrayLike, *, symmetrize: bool = True) -> jax.Array:
    """Checks that ``gram`` is ``[K, K]``, casts it to at least float32, symmetrises it.

    Raises:
      ValueError: if ``gram`` is not a square matrix.
    """
    g = jnp.asarray(gram)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be square [K, K], got shape {g.shape}")
    g = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    return 0.5 * (g + g.T) if symmetrize else g


def _is_concrete(x: jax.Array) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_presence(presence: jax.typing.ArrayLike | None, k: int) -> jax.Array | None:
    """The ``[K]`` boolean presence mask, or ``None`` (every task present).

    Args:
      presence: ``None``, or a ``[K]`` array of booleans or of ``{0, 1}`` numbers
        (traced values are taken as given: non-zero means present).
      k: the number of tasks.

    Raises:
      ValueError: if ``presence`` does not have shape ``(K,)``, or is concrete and
        holds a value other than 0/1/False/True.
    """
    if presence is None:
        return None
    m = jnp.asarray(presence)
    if m.shape != (k,):
        raise ValueError(f"presence must have shape ({k},), got shape {m.shape}")
    if m.dtype != jnp.bool_:
        if _is_concrete(m):
            v = np.asarray(m)
            if not np.all((v == 0) | (v == 1)):
                raise ValueError(f"presence must hold booleans or 0/1 values, got {v.tolist()}")
        m = m != 0
    return m


def all_present(presence: jax.Array | None, k: int) -> jax.Array:
    """``presence``, or a ``[K]`` all-True mask for ``None``."""
    return jnp.ones((k,), bool) if presence is None else presence


def restrict_gram(g: jax.Array, presence: jax.Array | None) -> jax.Array:
    """``G`` with the rows and columns of absent tasks set to zero (``G`` if ``None``)."""
    if presence is None:
        return g
    both = presence[:, None] & presence[None, :]
    return jnp.where(both, g, jnp.zeros((), g.dtype))


def nan_unless_finite(weights: jax.Array, *inputs: jax.Array) -> jax.Array:
    """``weights``, or all NaN if any of ``inputs`` has a non-finite entry.

    The inputs are restricted to the present tasks by the caller
    (:func:`restrict_gram`), so an absent task's NaN does not poison the weights.
    """
    ok = jnp.ones((), bool)
    for x in inputs:
        ok = ok & jnp.all(jnp.isfinite(x))
    return jnp.where(ok, weights, jnp.full_like(weights, jnp.nan))


def preference(
    pref_vector: jax.typing.ArrayLike | None,
    k: int,
    dtype,
    *,
    default: float,
    nonnegative: bool = False,
    presence: jax.Array | None = None,
    name: str = "pref_vector",
) -> jax.Array:
    """The ``[K]`` preference vector (``default`` on the present tasks if ``None``).

    With ``presence``, a ``default`` of ``1/K`` means ``1/|S|`` over the present tasks
    (the default of the ``|S|``-task problem); absent entries are set to 0.

    Args:
      pref_vector: ``[K]`` preferences or ``None``.
      k: the number of tasks.
      dtype: the dtype of the result.
      default: the value used when ``pref_vector`` is None; ``1/K`` for the
        "uniform mean" defaults, which are renormalised over the present tasks.
      nonnegative: whether the method needs ``p ≥ 0`` with some ``p_k > 0``.
      presence: the ``[K]`` boolean mask from :func:`check_presence`, or None.
      name: the argument's name in error messages.

    Returns:
      ``[K]`` preferences; for a traced ``pref_vector`` that breaks the rules above,
      all NaN.

    Raises:
      ValueError: if ``pref_vector`` does not have shape ``(K,)``, or is concrete and
        non-finite, or (``nonnegative``) has a negative entry or no positive entry.
    """
    if pref_vector is None:
        if presence is None:
            return jnp.full((k,), default, dtype)
        n = jnp.maximum(jnp.sum(presence), 1).astype(dtype)
        value = 1.0 / n if default == 1.0 / k else jnp.asarray(default, dtype)
        return jnp.where(presence, value, 0.0).astype(dtype)
    p = jnp.asarray(pref_vector, dtype)
    if p.shape != (k,):
        raise ValueError(f"{name} has shape {p.shape}, expected ({k},)")
    ok = jnp.all(jnp.isfinite(p))
    if nonnegative:
        ok = ok & jnp.all(p >= 0) & jnp.any(p > 0)
    if _is_concrete(p):
        if not bool(ok):
            need = "non-negative with a positive entry" if nonnegative else "finite"
            raise ValueError(f"{name} must be {need}, got {np.asarray(p).tolist()}")
    else:
        p = jnp.where(ok, p, jnp.full_like(p, jnp.nan))
    if presence is not None:
        p = jnp.where(presence, p, 0.0)
    return p


def check_preference(
    pref_vector: jax.typing.ArrayLike | None,
    num_tasks: int | None = None,
    *,
    nonnegative: bool = False,
    name: str = "pref_vector",
) -> jax.Array | None:
    """Validates a concrete preference vector at build time (a balancer's argument).

    Args:
      pref_vector: ``None`` or a 1-D array.
      num_tasks: if given, the required length.
      nonnegative: whether the method needs ``p ≥ 0`` with some ``p_k > 0``.
      name: the argument's name in error messages.

    Returns:
      ``None``, or the float32 ``[K]`` vector.

    Raises:
      ValueError: naming ``name`` and the value, as :func:`preference`.
    """
    if pref_vector is None:
        return None
    p = jnp.asarray(pref_vector, jnp.float32)
    if p.ndim != 1:
        raise ValueError(f"{name} must be a [K] vector, got shape {p.shape}")
    k = p.shape[0] if num_tasks is None else num_tasks
    return preference(p, k, jnp.float32, default=0.0, nonnegative=nonnegative, name=name)
