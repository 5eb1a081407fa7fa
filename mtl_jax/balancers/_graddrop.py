"""GradDrop: gradient sign dropout, a per-coordinate choice of one gradient sign.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020,
https://arxiv.org/abs/2010.06808.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _task_tree, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state

__all__ = ["GradDropState", "graddrop"]


class GradDropState(NamedTuple):
    key: jax.Array  # [2] uint32 raw key data (jax.random.key_data) for the next draws
    weights: jax.Array | None  # [K] all ones (no per-task weights), None without num_tasks


@jax.jit
def _drop(x: jax.Array, key: jax.Array, leak: jax.Array) -> jax.Array:
    """GradDrop on one leaf ``x`` of shape ``[K, ...]`` with per-task ``leak[K]``."""
    k = x.shape[0]
    lk = jnp.reshape(leak, (k,) + (1,) * (x.ndim - 1))
    total = _task_tree.sum_leading(x)  # not jnp.sum(axis=0): slow on XLA CPU
    mass = _task_tree.sum_leading(jnp.abs(x))
    nonzero = mass > 0
    purity = 0.5 * (1.0 + jnp.where(nonzero, total / jnp.where(nonzero, mass, 1.0), 0.0))
    u = jax.random.uniform(key, purity.shape, purity.dtype)
    keep_pos = jnp.expand_dims(purity > u, 0)
    keep_neg = jnp.expand_dims(purity < u, 0)
    kept = (keep_pos & (x > 0)) | (keep_neg & (x < 0))
    factor = lk + (1.0 - lk) * kept.astype(lk.dtype)
    return _task_tree.sum_leading(factor.astype(x.dtype) * x)


def graddrop(
    *,
    seed: int = 0,
    leak: float | Sequence[float] = 0.0,
    num_tasks: int | None = None,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """GradDrop: per coordinate, keep the positive or the negative task gradients.

    For every coordinate of the shared leaves, the *positive sign purity*
    ``P = ½ (1 + Σ_k g_k / Σ_k |g_k|)`` is compared with ``U ~ Uniform(0, 1)``
    (one draw per coordinate): if ``P > U`` the positive components are kept, else
    the negative ones. Task ``k`` contributes ``(ℓ_k + (1 − ℓ_k) M_k) g_k`` where
    ``M_k`` is 1 when its component was kept and ``ℓ_k`` is its leak (lines 10–15 of
    Algorithm 1, with ``f`` the identity). Coordinates where every gradient is 0
    get ``P = ½`` and contribute 0.

    The paper applies the rule to the gradients w.r.t. a shared activation
    (summed over the batch); here it acts per coordinate of whatever Jacobian it
    is given, like torchjd: the shared parameters in full-parameter mode, the
    shared representation in representation mode (where the batch is part of
    the coordinates).

    Scale: where all task gradients share a sign the update is
    :func:`equal_weighting`'s; elsewhere components of one sign are dropped.

    Cost: Jacobian (the per-task gradients of the shared leaves).

    Args:
      seed: seed of the PRNG key drawing ``U``.
      leak: ``ℓ`` in ``[0, 1]``, one float for all tasks or one per task (then
        ``len(leak) = K``); ``ℓ = 1`` passes a task's gradient through unchanged.
      num_tasks: if given, the state has a ``[K]`` ``weights`` field, all ones:
        GradDrop's update is not ``Σ_k w_k g_k`` (it masks coordinates), so no
        task weights describe it; the ones say every task took part.
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"jacobian"``.

    References:
      Chen et al. 2020, https://arxiv.org/abs/2010.06808
    """
    _validate.check_num_tasks(num_tasks)
    seed = _validate.check_seed(seed)
    if isinstance(leak, str):
        raise ValueError(f"leak must be a float or a 1-D sequence in [0, 1], got {leak!r}")
    leak_arr = jnp.asarray(leak, jnp.float32)
    ok = bool(jnp.all((leak_arr >= 0) & (leak_arr <= 1)))
    if leak_arr.ndim > 1 or (leak_arr.ndim == 1 and leak_arr.shape[0] == 0) or not ok:
        raise ValueError(f"leak must be a float or a 1-D sequence in [0, 1], got {leak!r}")
    if leak_arr.ndim == 1 and num_tasks is not None and leak_arr.shape[0] != num_tasks:
        raise ValueError(f"leak has {leak_arr.shape[0]} entries but num_tasks={num_tasks}")

    def init(params):
        del params
        return GradDropState(_state.key_data(seed), _state.init_weights(num_tasks))

    def combine(leaves, losses, state, presence=None):
        # Absent tasks' rows arrive as zeros: they add nothing to Σ g or Σ |g|, so
        # the signs kept, and the update, are those of the present tasks alone.
        del losses
        k = leaves[0].shape[0]
        if leak_arr.ndim == 1 and leak_arr.shape[0] != k:
            raise ValueError(f"leak has {leak_arr.shape[0]} entries but got {k} tasks")
        key, subs = _state.split_key(state.key, len(leaves))
        out = []
        for x, sub in zip(leaves, subs):
            out.append(_drop(x, sub, jnp.broadcast_to(leak_arr, (k,))))
        ones = jnp.ones((k,), jnp.float32)
        if presence is not None:
            ones = jnp.where(presence, ones, 0.0)
        weights = _state.record_weights(state.weights, ones)
        return out, GradDropState(key, weights)

    return _base.jacobian_balancer(init, combine, shared=shared)
