"""Auto-Lambda: task weights learned by a one-step look-ahead on a validation batch.

Liu, Davison & Johns, TMLR 2022, https://arxiv.org/abs/2202.03091. The weights'
meta-gradient is :func:`mtl_jax.balancers.auto_lambda_hypergradient`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.balancers._auto_lambda_hypergradient import METHODS, auto_lambda_hypergradient

__all__ = ["AutoLambdaState", "auto_lambda"]


class AutoLambdaState(NamedTuple):
    """Auto-Lambda's state: the learned weights ``λ``, their Adam state and the weights
    last applied (``λ`` with an absent task's weight 0)."""

    lam: jax.Array  # [K] float32
    meta_opt_state: Any
    weights: jax.Array  # [K] float32: the weights of the last update


class AutoLambda(_base.Balancer):
    """A loss-kind :class:`~mtl_jax.balancers.Balancer` with a ``meta_update`` for its weights."""

    meta_update: Callable[..., AutoLambdaState]


def auto_lambda(
    task_loss_fn: Callable[..., jax.Array],
    *,
    num_tasks: int,
    inner_lr: float,
    meta_lr: float = 1e-4,
    weight_init: float = 0.1,
    primary: Any = None,
    method: str = "finite_difference",
    eps: float = 0.01,
    shared: MaskSpec = None,
) -> AutoLambda:
    """Auto-Lambda: the update ``Σ_k λ_k ∇L_k`` with ``λ`` trained on a validation batch.

    ``λ`` descends (Adam, ``meta_lr``) the primary tasks' validation loss after one
    look-ahead step ``θ' = θ − α Σ_k λ_k ∇L_k(θ)`` on the training batch:

    .. math::
        λ ← \\mathrm{Adam}\\big(∂_λ Σ_{k∈P} L_k^{val}(θ'(λ))\\big), \\qquad
        ∂_{λ_k} = −α ∇L_k^{train}(θ)ᵀ ∇_{θ'} L^{val}_P(θ').

    The balancer is a loss-only method (kind ``"loss"``) that applies the current
    ``λ``, so any training step takes it unchanged, by default the one-backward
    ``mode="loss"``; since no step gradient enters ``λ``, ``mode="jacobian"`` and
    ``mode="representation"`` give the same update. The look-ahead is a separate
    call made before each step, on the same training batch and a validation batch::

        bstate = tx.meta_update(state.balancer_state, state.params, batch, val_batch)
        state, metrics = step(state._replace(balancer_state=bstate), batch)

    Cost: bilevel (a validation batch and a second-order term). Per meta-update:
    one backward pass for the look-ahead, one forward and backward pass on the
    validation batch, and two forward passes on the training batch for the
    finite-difference mixed derivative (``method="exact"``: one forward-mode pass
    instead). Roughly three times a plain step's cost.

    Resolved against the authors' code (``lorenmt/auto-lambda``): ``λ`` starts at
    ``weight_init = 0.1`` and trains with Adam (as there; the paper states a plain
    gradient step); the look-ahead is a plain gradient step of size ``inner_lr``
    (the authors' virtual step also adds the SGD momentum buffer and weight decay,
    which shift ``θ'`` but not ``∂θ'/∂λ``; not modelled); the finite difference's
    ``ε = 0.01 / ‖d‖`` is theirs, and the exact mixed derivative is an option
    they do not have; ``λ`` is not constrained (nor is it there).

    Presence: an absent task gets weight 0 in the update (and in the recorded
    weights) and in the look-ahead, its ``λ`` and its Adam moments stay unchanged;
    a task absent from the validation batch (``val_presence``) is left out of the
    validation loss.

    Args:
      task_loss_fn: ``(params, batch) -> [K]`` per-task losses (the training step's
        loss function, without extra keyword arguments).
      num_tasks: ``K``.
      inner_lr: ``α > 0``, the look-ahead step (set it to the model's learning rate).
      meta_lr: Adam's step size for ``λ``.
      weight_init: the initial ``λ_k``.
      primary: ``[K]`` bool, the tasks whose validation loss counts (all by default).
      method: ``"finite_difference"`` (the authors') or ``"exact"`` (``jax.jvp``).
      eps: the finite difference's relative step.
      shared: leaves to weight; the others receive the plain sum over tasks.

    Returns:
      A balancer of kind ``"loss"`` (an ``AutoLambda``); its ``meta_update(state,
      params, train_batch, val_batch, *, task_presence=None, val_presence=None)``
      returns the state with ``λ`` (``state.lam``) updated; ``state.weights`` records
      the weights of the last update (:func:`mtl_jax.balancers.task_weights`).

    Raises:
      ValueError: a bad ``num_tasks``, ``inner_lr``, ``meta_lr``, ``weight_init``,
        ``eps``, ``method`` or ``primary``; ``meta_update``: a ``task_presence`` or
        ``val_presence`` that is not a ``[K]`` bool array.

    References:
      Liu, Davison & Johns, "Auto-Lambda: Disentangling Dynamic Task Relationships",
      TMLR 2022, https://arxiv.org/abs/2202.03091
    """
    _validate.check_num_tasks(num_tasks, required=True)
    for name, value in (("inner_lr", inner_lr), ("meta_lr", meta_lr), ("eps", eps)):
        _validate.check_positive(name, value)
    if isinstance(weight_init, bool) or not isinstance(weight_init, int | float):
        raise ValueError(f"weight_init must be a number, got {weight_init!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if primary is not None:
        primary = jnp.asarray(primary)
        if primary.shape != (num_tasks,) or primary.dtype != bool or not bool(primary.any()):
            raise ValueError(
                f"primary must be a [num_tasks]={num_tasks} bool array with a True entry, "
                f"got {primary!r}"
            )
    meta_opt = optax.adam(meta_lr)

    def init(params):
        del params
        w = jnp.full((num_tasks,), weight_init, jnp.float32)
        return AutoLambdaState(w, meta_opt.init(w), w)

    def weights_fn(losses, state, presence=None):
        w = state.lam.astype(losses.dtype)
        if presence is not None:
            w = jnp.where(presence, w, 0.0)
        return w, state._replace(weights=w)

    def meta_update(
        state, params, train_batch, val_batch, *, task_presence=None, val_presence=None
    ):
        task_presence = _presence.check_presence(task_presence, num_tasks, "task_presence")
        val_presence = _presence.check_presence(val_presence, num_tasks, "val_presence")
        hyper, _ = auto_lambda_hypergradient(
            task_loss_fn,
            params,
            train_batch,
            val_batch,
            state.lam,
            inner_lr=inner_lr,
            primary=primary,
            presence=task_presence,
            val_presence=val_presence,
            method=method,
            eps=eps,
        )
        upd, opt_state = meta_opt.update(hyper, state.meta_opt_state, state.lam)
        new = state._replace(lam=optax.apply_updates(state.lam, upd), meta_opt_state=opt_state)
        if task_presence is not None:  # absent tasks: λ and their Adam moments unchanged
            keep = jnp.asarray(task_presence, bool)

            def pick(n, o):
                if jnp.ndim(o) == 1 and o.shape[0] == num_tasks:
                    return jnp.where(keep, n, o)
                return n

            new = jax.tree_util.tree_map(pick, new, state)
        return _state.like(new, state)

    bal = _base.loss_balancer(init, weights_fn, shared=shared)
    out = AutoLambda(bal.init, bal.update, bal.spec)
    out.meta_update = meta_update
    return out
