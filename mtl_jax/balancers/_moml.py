"""MOML: task-weight logits trained by MGDA on the validation losses' hypergradients.

Ye, Lin, Yue, Guo, Xiao & Zhang, "Multi-Objective Meta Learning", NeurIPS 2021,
https://arxiv.org/abs/2102.07121. The pure parts are
:func:`mtl_jax.weighting.moml_hypergradients` and :func:`mtl_jax.weighting.moml_direction`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _bilevel, _state
from mtl_jax.weighting._moml import moml_direction, moml_hypergradients

__all__ = ["MOMLState", "moml"]


class MOMLState(NamedTuple):
    """MOML's state: the weight logits ``α``, their Adam state, the weights last applied."""

    logits: jax.Array  # [K] float32
    meta_opt_state: Any
    weights: jax.Array  # [K] float32: softmax(α) over the present tasks, last applied


class MOML(_base.Balancer):
    """A loss-kind :class:`~mtl_jax.balancers.Balancer` with a ``meta_update`` for its logits."""

    meta_update: Callable[..., MOMLState]


def moml(
    task_loss_fn: Callable[..., jax.Array],
    *,
    num_tasks: int,
    inner_lr: float,
    meta_lr: float = 1e-3,
    meta_optimizer: optax.GradientTransformation | None = None,
    inner_steps: int = 1,
    normalization: str = "l2",
    shared: MaskSpec = None,
) -> MOML:
    """MOML: the update ``Σ_k s_k ∇L_k``, ``s = softmax(α)`` trained by MGDA on validation losses.

    Multi-objective bilevel learning of the loss weights: the lower level trains the
    model on ``f(α, ω) = Σ_k s_k(α) L_k(ω)``, the upper level has one objective per
    task, its validation loss ``F_i``. A meta-update unrolls ``T = inner_steps``
    gradient steps of ``f`` from the current parameters on the training batch,

    .. math::
        ω_{t+1} = ω_t − η ∇_ω f(α, ω_t), \\qquad t = 0, …, T − 1,

    takes the hypergradient of each validation loss, ``h_i = ∂F_i(ω_T(α))/∂α``,
    and moves ``α`` (Adam, ``meta_lr``) along the minimum-norm point of their
    convex hull (MGDA, on rows normalised by ``‖h_i‖`` with ``normalization="l2"``):

    .. math::
        α ← \\mathrm{Adam}\\Big(\\sum_i γ_i \\frac{h_i}{‖h_i‖}\\Big), \\qquad
        γ = \\arg\\min_{γ ∈ Δ} \\Big\\|\\sum_i γ_i \\frac{h_i}{‖h_i‖}\\Big\\|.

    The balancer applies the current ``s`` (a loss-only method, kind ``"loss"``), so
    any training step takes it unchanged, by default the one-backward ``mode="loss"``;
    since no step gradient enters ``s``, ``mode="jacobian"`` and
    ``mode="representation"`` give the same update. The meta-update is a separate
    call before each step::

        bstate = tx.meta_update(state.balancer_state, state.params, batch, val_batch)
        state, metrics = step(state._replace(balancer_state=bstate), batch)

    Cost: bilevel (a validation batch). With ``inner_steps=1`` the hypergradient is
    exact in closed form without a second derivative,
    ``h_i = −η ⟨∇F_i(ω_1), ∇L_j(ω)⟩_j J_s`` (:func:`mtl_jax.weighting.moml_hypergradients`):
    ``K`` backward passes on the training batch, ``K`` on the validation batch.
    With ``inner_steps = T > 1`` it is ``jax.jacrev`` through the unrolled steps:
    ``K`` reverse passes through ``T`` gradient steps, i.e. second-order terms
    (Hessian-vector products) and ``T`` copies of the parameters in memory.

    Resolved between the paper and LibMTL's trainer (``bacth_forward_MOML``):
    the weights are ``softmax(α)`` with ``α`` trained by Adam (lr ``1e-3`` there;
    the paper states a plain step on generic hyperparameters), as there; MGDA
    normalises each hypergradient by its ℓ2 norm as there (``normalization="none"``
    is the paper's plain MGDA); the upper level uses the validation batch the caller
    passes, as in the paper (LibMTL draws a second half-size training batch for it);
    ``inner_steps > 1`` is the paper's unrolled look-ahead, which LibMTL's trainer
    does not support.

    The softmax is shift-invariant, so the ``K`` hypergradients lie in a
    ``(K − 1)``-dimensional space; for ``K ≥ 3`` zero is often in their convex hull
    (the logits are Pareto-stationary) and the MGDA direction is zero; it is
    returned as exactly 0 (:func:`mtl_jax.weighting.moml_direction`), where LibMTL
    hands Adam the rounding residue, which Adam's division by its running second
    moment turns into full ``meta_lr`` steps of arbitrary sign. Adam still moves the
    logits there on the momentum of earlier steps; pass
    ``meta_optimizer=optax.sgd(...)`` for steps proportional to the direction.

    Presence: a task absent from ``train_batch`` (``task_presence``) takes no part in
    the look-ahead, keeps its logit and its Adam moments and gets weight 0 in the
    step; a task absent from ``val_batch`` (``val_presence``) is left out of MGDA's
    simplex (with none present the meta-update leaves the state as it was).

    Args:
      task_loss_fn: ``(params, batch) -> [K]`` per-task losses (without extra
        keyword arguments); an absent task's loss must be finite (as
        :func:`mtl_jax.masked_task_losses` gives it).
      num_tasks: ``K``.
      inner_lr: ``η > 0``, the look-ahead step (the model's learning rate).
      meta_lr: Adam's step size for ``α``.
      meta_optimizer: an optax transform for ``α`` in place of ``Adam(meta_lr)``
        (its per-task moments are kept for absent tasks like Adam's).
      inner_steps: ``T ≥ 1``, the look-ahead's gradient steps.
      normalization: ``"l2"`` (LibMTL) or ``"none"`` (the paper's MGDA).
      shared: leaves to weight; the others receive the plain sum over tasks.

    Returns:
      A balancer of kind ``"loss"`` (a ``MOML``); its ``meta_update(state, params,
      train_batch, val_batch, *, task_presence=None, val_presence=None)`` returns the
      state with ``α`` updated.

    Raises:
      ValueError: a bad ``num_tasks``, ``inner_lr``, ``meta_lr``, ``inner_steps`` or
        ``normalization``.
      TypeError: a ``meta_optimizer`` that is not an optax transform.

    References:
      Ye, Lin, Yue, Guo, Xiao & Zhang, "Multi-Objective Meta Learning", NeurIPS 2021,
      https://arxiv.org/abs/2102.07121
    """
    _validate.check_num_tasks(num_tasks, required=True)
    inner_lr = _validate.check_positive("inner_lr", inner_lr)
    meta_lr = _validate.check_positive("meta_lr", meta_lr)
    inner_steps = _validate.check_int("inner_steps", inner_steps)
    if normalization not in ("l2", "none"):
        raise ValueError(f"normalization must be 'l2' or 'none', got {normalization!r}")
    meta_opt = _bilevel.meta_optimizer(meta_optimizer, meta_lr)

    def init(params):
        del params
        a = jnp.zeros((num_tasks,), jnp.float32)
        return MOMLState(a, meta_opt.init(a), jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

    def weights_fn(losses, state, presence=None):
        w = _presence.masked_softmax(state.logits, presence).astype(losses.dtype)
        return w, state._replace(weights=w)

    def hypergradients(params, train_batch, val_batch, logits, present, val_mask):
        if inner_steps == 1:
            s = _presence.masked_softmax(logits, present)
            tr = _bilevel.task_jacobian(
                lambda p: _bilevel.masked_losses(task_loss_fn, p, train_batch, present), params
            )
            leaves, treedef = jax.tree_util.tree_flatten(params)
            ahead = [
                x - inner_lr * (s.astype(j.dtype) @ j).reshape(x.shape).astype(x.dtype)
                for x, j in zip(leaves, tr, strict=True)
            ]
            ahead = jax.tree_util.tree_unflatten(treedef, ahead)
            val = _bilevel.task_jacobian(
                lambda p: _bilevel.masked_losses(task_loss_fn, p, val_batch, val_mask), ahead
            )
            cross = _bilevel.cross_gram(val, tr)
            return moml_hypergradients(cross, logits, inner_lr=inner_lr, presence=present)

        def upper(a):
            s = _presence.masked_softmax(a, present)
            ahead = _bilevel.sgd_steps(
                lambda p, b: _bilevel.masked_losses(task_loss_fn, p, b, present),
                params,
                train_batch,
                s,
                inner_lr,
                inner_steps,
            )
            return _bilevel.masked_losses(task_loss_fn, ahead, val_batch, val_mask)

        return jax.jacrev(upper)(logits)

    def meta_update(
        state, params, train_batch, val_batch, *, task_presence=None, val_presence=None
    ):
        present = _bilevel.mask_of(task_presence, num_tasks, "task_presence")
        val_mask = _bilevel.mask_of(val_presence, num_tasks, "val_presence")
        logits = state.logits
        h = hypergradients(params, train_batch, val_batch, logits, present, val_mask)
        d, _ = moml_direction(h, normalization=normalization, presence=val_mask)
        # no validation objective present: nothing to descend, the state stays as it was
        keep = present & jnp.any(val_mask)
        new_logits, opt_state = _bilevel.meta_step(meta_opt, d, logits, state.meta_opt_state, keep)
        return _state.like(state._replace(logits=new_logits, meta_opt_state=opt_state), state)

    bal = _base.loss_balancer(init, weights_fn, shared=shared)
    out = MOML(bal.init, bal.update, bal.spec)
    out.meta_update = meta_update
    return out
