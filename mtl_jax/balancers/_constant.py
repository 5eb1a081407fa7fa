"""Constant: fixed task weights, ``Σ_k c_k ∇L_k`` (a linear scalarisation).

The weighting is :func:`mtl_jax.weighting.constant_weights` (torchjd's ``Constant``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _constant

__all__ = ["constant"]


def constant(
    *,
    weights: jax.typing.ArrayLike,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """Fixed user weights: the update is ``Σ_k c_k ∇L_k``, the gradient of ``Σ_k c_k L_k``.

    Scale: ``weights=jnp.ones(K)`` is :func:`equal_weighting`.

    Modes: loss-only (one backward pass of ``Σ_k c_k L_k``); full-parameter and
    representation modes coincide. An absent task gets weight 0; the present
    tasks keep their ``c_k`` (no renormalisation).

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      weights: ``[K]`` finite real weights ``c`` (``K`` is taken from them).
      shared: leaves to weight (all by default); the others receive the plain sum.
      num_tasks: optional; if given it must equal ``len(weights)``.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"`` whose state
      records the weights applied at the last update.

    Example:
      >>> import jax.numpy as jnp
      >>> import mtl_jax as mtl
      >>> tx = mtl.balancers.constant(weights=jnp.array([1.0, 0.5]))
      >>> jac = {"w": jnp.array([[2.0, 0.0], [0.0, 2.0]])}
      >>> upd, _ = tx.update(jac, tx.init(None), task_losses=jnp.ones(2))
      >>> upd["w"].tolist()
      [2.0, 1.0]
    """
    c = np.asarray(weights)
    if c.ndim != 1 or c.shape[0] == 0 or not np.issubdtype(c.dtype, np.number):
        raise ValueError(f"weights must be a non-empty [K] vector of numbers, got {weights!r}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"weights must be finite, got {weights!r}")
    _validate.check_num_tasks(num_tasks)
    k = c.shape[0]
    if num_tasks is not None and num_tasks != k:
        raise ValueError(f"num_tasks={num_tasks} but weights has {k} entries")
    c32 = jnp.asarray(c, jnp.float32)

    def init(params):
        del params
        return _state.WeightsState(c32)

    def weights_fn(losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=k)
        w = _constant.constant_weights(c32.astype(losses.dtype), presence=presence)
        return w, _state.WeightsState(_state.record_weights(state.weights, w))

    return _base.loss_balancer(init, weights_fn, shared=shared)
