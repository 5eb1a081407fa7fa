"""Equal weighting: the gradient of ``Σ_k L_k``, the baseline every method is compared to."""

from __future__ import annotations

import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state

__all__ = ["equal_weighting"]


def equal_weighting(*, shared: MaskSpec = None, num_tasks: int | None = None) -> _base.Balancer:
    """The gradient of the summed losses, ``Σ_k ∇L_k`` (all weights 1).

    This fixes the library's scale convention: every other balancer documents
    its scale relative to this one. A training step differentiates ``Σ_k L_k``
    once (it is a loss-only method).

    Presence: an absent task gets weight 0 and every present task weight 1.

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      shared: leaves to weight (all by default); the others are summed anyway,
        so the mask does not change the result.
      num_tasks: if given, the state records the (constant) weights for logging.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import mtl_jax as mtl
      >>> tx = mtl.balancers.equal_weighting()
      >>> jac = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
      >>> upd, _ = tx.update(jac, tx.init(None), task_losses=jnp.ones(2))
      >>> upd["w"].tolist()
      [4.0, 6.0]
    """
    _validate.check_num_tasks(num_tasks)

    def init(params):
        del params
        return _state.init_weights_state(num_tasks)

    def weights_fn(losses, state, presence=None):
        w = jnp.ones_like(losses) if presence is None else presence.astype(losses.dtype)
        return w, _state.WeightsState(_state.record_weights(state.weights, w))

    return _base.loss_balancer(init, weights_fn, shared=shared)
