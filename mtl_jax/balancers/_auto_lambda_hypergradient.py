"""Auto-Lambda's hypergradient: how the validation loss after one look-ahead step moves with λ.

Liu, Davison & Johns, "Auto-Lambda: Disentangling Dynamic Task Relationships",
TMLR 2022, https://arxiv.org/abs/2202.03091. It lives with the balancers, not in
:mod:`mtl_jax.weighting`, because it needs the loss function, the parameters and
two batches rather than a Gram matrix or losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _validate

__all__ = ["auto_lambda_hypergradient"]

METHODS = ("finite_difference", "exact")


def _tree_axpy(a, x, y):
    return jax.tree_util.tree_map(lambda xi, yi: yi + a * xi.astype(yi.dtype), x, y)


def auto_lambda_hypergradient(
    task_loss_fn: Callable[..., jax.Array],
    params: Any,
    train_batch: Any,
    val_batch: Any,
    weights: jax.Array,
    *,
    inner_lr: float,
    primary: jax.Array | None = None,
    presence: jax.Array | None = None,
    val_presence: jax.Array | None = None,
    method: str = "finite_difference",
    eps: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """The gradient of Auto-Lambda's look-ahead validation loss with respect to the weights λ.

    With task losses ``L_k`` (``task_loss_fn(params, batch) -> [K]``), the look-ahead
    parameters after one step of size ``α`` on the weighted training loss are

    .. math::
        θ'(λ) = θ − α \\sum_k λ_k ∇L_k(θ; \\text{train}),

    and the objective is the summed validation loss of the primary tasks,
    ``F(λ) = Σ_{k∈P} L_k(θ'(λ); val)``. Its gradient is, exactly,

    .. math::
        ∂F/∂λ_k = −α\\, ∇L_k(θ; \\text{train})ᵀ d, \\qquad d = ∇_{θ'} F,

    the mixed second derivative ``∂²(Σ_j λ_j L_j)/∂λ_k∂θ`` applied to ``d``.
    ``method="exact"`` computes ``∇L_k ᵀ d`` for every ``k`` with one
    forward-mode product (``jax.jvp`` of the task losses along ``d``);
    ``method="finite_difference"`` uses the central difference the authors' code
    uses, ``(L_k(θ + εd) − L_k(θ − εd)) / 2ε`` with ``ε = eps / ‖d‖``.

    Cost: one backward pass for the look-ahead step, one forward and backward pass
    on the validation batch, then two forward passes (finite difference) or one
    forward-mode pass (exact) on the training batch.

    An absent task's loss must be finite (as :func:`mtl_jax.masked_task_losses`
    gives it: 0), since its gradient enters the look-ahead's backward pass with
    weight 0 and a NaN there would still propagate.

    Args:
      task_loss_fn: ``(params, batch) -> [K]`` per-task losses.
      params: ``θ``.
      train_batch: the batch of the look-ahead step.
      val_batch: the validation batch ``F`` is measured on.
      weights: ``[K]`` ``λ``.
      inner_lr: ``α > 0``, the look-ahead step size (the model optimiser's learning rate).
      primary: ``[K]`` bool, the tasks whose validation loss counts (all by default:
        the multi-task setting; a subset: the auxiliary-learning setting).
      presence: ``[K]`` bool, tasks present in ``train_batch``; absent ones take no
        part in the look-ahead step and get hypergradient 0.
      val_presence: ``[K]`` bool, tasks present in ``val_batch``; absent ones are
        left out of ``F``.
      method: ``"finite_difference"`` (the authors' approximation) or ``"exact"``.
      eps: the finite difference's relative step ``ε ‖d‖``.

    Returns:
      ``(hypergradient [K], F)``: ``∂F/∂λ`` (0 for absent tasks) and the look-ahead
      validation loss.

    Raises:
      ValueError: a bad ``inner_lr``, ``eps``, ``method``, ``presence`` or
        ``val_presence`` (not a ``[K]`` bool array).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _validate.check_positive("inner_lr", inner_lr)
    _validate.check_positive("eps", eps)
    weights = jnp.asarray(weights)
    k = weights.shape[0]
    presence = _presence.check_presence(presence, k, "presence")
    val_presence = _presence.check_presence(val_presence, k, "val_presence")
    ones = jnp.ones((k,), bool)
    present = ones if presence is None else presence
    val_mask = ones if primary is None else jnp.asarray(primary, bool)
    if val_presence is not None:
        val_mask = val_mask & val_presence

    def masked_losses(p, batch, mask):
        losses = task_loss_fn(p, batch)
        return jnp.where(mask, losses, 0.0)  # where, not *: an absent NaN loss stays out

    def train_objective(p):
        return jnp.sum(jax.lax.stop_gradient(weights) * masked_losses(p, train_batch, present))

    grads = jax.grad(train_objective)(params)
    lookahead = _tree_axpy(-inner_lr, grads, params)
    val_loss, d = jax.value_and_grad(lambda p: jnp.sum(masked_losses(p, val_batch, val_mask)))(
        lookahead
    )
    if method == "exact":
        _, mixed = jax.jvp(lambda p: masked_losses(p, train_batch, present), (params,), (d,))
    else:
        sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(d))
        norm = jnp.sqrt(sq)
        step = eps / jnp.where(norm > 0, norm, 1.0)
        plus = masked_losses(_tree_axpy(step, d, params), train_batch, present)
        minus = masked_losses(_tree_axpy(-step, d, params), train_batch, present)
        mixed = jnp.where(norm > 0, (plus - minus) / (2.0 * step), 0.0)
    hyper = jnp.where(present, -inner_lr * mixed, 0.0)
    return hyper.astype(weights.dtype), val_loss
