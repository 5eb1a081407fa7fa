"""FORUM: first-order multi-objective bilevel learning of the task weights and the model.

Ye, Lin, Cao, Zhang & Tsang, "A First-Order Multi-Gradient Algorithm for
Multi-Objective Bi-Level Optimization", ECAI 2024, https://arxiv.org/abs/2401.09257.
The pure part is :func:`mtl_jax.weighting.forum_weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence, _task_tree, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _bilevel, _state
from mtl_jax.weighting._forum import forum_weights

__all__ = ["FORUMState", "forum"]


class FORUMState(NamedTuple):
    """FORUM's state.

    ``logits`` ``α`` and their Adam state; ``lam`` the running average ``λ̄`` of the
    upper-level weights and ``count`` the meta-updates so far; ``step_weights``
    ``ν s``, set by the meta-update, the weights the step applies to the training
    losses' gradients; ``weights`` those the last step applied (``ν s`` with an
    absent task's weight 0); ``direction`` the upper-level part
    ``Σ_i λ̄_i ∇F_i / ‖∇F_i‖`` of the update, one array per shared leaf of the
    parameters.
    """

    logits: jax.Array  # [K] float32
    meta_opt_state: Any
    lam: jax.Array  # [K] float32
    count: jax.Array  # int32 scalar
    step_weights: jax.Array  # [K] float32: ν s
    weights: jax.Array  # [K] float32: the weights of the last update
    direction: tuple  # shared leaves of params


class FORUM(_base.Balancer):
    """A loss-kind :class:`~mtl_jax.balancers.Balancer` with a stored direction (its
    :attr:`~mtl_jax.balancers.BalancerSpec.offset`) and a ``meta_update``."""

    meta_update: Callable[..., FORUMState]


def forum(
    task_loss_fn: Callable[..., jax.Array],
    *,
    num_tasks: int,
    inner_lr: float,
    meta_lr: float = 1e-3,
    meta_optimizer: optax.GradientTransformation | None = None,
    inner_steps: int = 5,
    phi: float = 0.1,
    ema_power: float = 0.75,
    decay_every: int = 1,
    normalize: bool = True,
    shared: MaskSpec = None,
) -> FORUM:
    """FORUM: one first-order multi-gradient step on the task-weight logits and the model.

    FORUM writes the bilevel problem (lower level ``f(α, ω) = Σ_k s_k(α) L_k(ω)``
    with ``s = softmax(α)`` on the training batch, upper level the validation losses
    ``F_i(ω)``) as one constrained multi-objective problem in ``z = (α, ω)``:

    .. math::
        \\min_z (F_1, …, F_K)(ω) \\quad \\text{s.t.}\\quad
        q(z) = f(α, ω) − f(α, ω_T) ≤ 0,

    where ``ω_T`` approximates ``argmin_ω f(α, ω)`` by ``T = inner_steps`` gradient
    steps of size ``inner_lr`` from ``ω`` (its value ``f(α, ω_T)`` stands for the
    value function; ``∇_α q`` treats ``ω_T`` as fixed, so no second derivative is
    needed). A meta-update computes

    .. math::
        ∇_α q = J_s\\,(L(ω) − L(ω_T)),\\quad ∇_ω q = \\sum_k s_k ∇L_k(ω),\\quad
        J_s = \\mathrm{diag}(s) − s sᵀ,

    the validation gradients ``∇F_i`` (normalised to unit norm with ``normalize``),
    the weights ``λ̃`` of :func:`mtl_jax.weighting.forum_weights` (the dual of the
    steepest common descent that decreases ``q`` at rate ``φ‖∇q‖²``), their running
    average ``λ̄ ← λ̄ + β_t (λ̃ − λ̄)`` with ``β_t = (1 + ⌊t / \\text{decay\\_every}⌋)^{−p}``
    (``p = ema_power``), and ``ν = max(Σ_i λ̄_i π_i, 0)``. The logits take an Adam step
    (``meta_lr``) along ``ν ∇_α q``; the model's update, which the training step
    computes from this balancer, is

    .. math::
        Σ_i λ̄_i \\frac{∇F_i}{‖∇F_i‖} + ν \\sum_k s_k ∇L_k(ω),

    the stored first part plus the weights ``ν s`` applied to the step's task
    losses (pass the step the training batch the meta-update saw)::

        bstate = tx.meta_update(state.balancer_state, state.params, batch, val_batch)
        state, metrics = step(state._replace(balancer_state=bstate), batch)

    Before the first meta-update the update is zero.

    Routes: ``ν s`` is fixed by the meta-update and no gradient of the step enters
    it, so the step's part ``Σ_k ν s_k ∇L_k`` is the gradient of the weighted loss
    ``Σ_k ν s_k L_k``: the balancer is of kind ``"loss"`` and every route of
    :func:`mtl_jax.training.make_train_step` gives the same update, the stored
    direction added to the shared leaves (its
    :attr:`~mtl_jax.balancers.BalancerSpec.offset`). ``mode="loss"`` (what
    ``mode="auto"`` picks) takes one backward pass; ``mode="representation"`` is
    then the loss route on ``decode(encode(·))``, exact by the chain rule
    (``J_encᵀ Σ_k ν s_k ∂L_k/∂z = Σ_k ν s_k ∇_enc L_k``), not an MGDA-UB-style
    approximation: the weights that need the parameter-space gradients, ``λ̃`` and
    ``ν``, come from the meta-update, which always takes them on the shared
    parameters, as the paper does.

    Cost: bilevel (a validation batch), first order. Per meta-update: ``T + 1``
    backward passes on the training batch (the ``T`` inner steps and ``∇_ω f``), one
    forward pass at ``ω_T``, ``K`` backward passes on the validation batch, and a
    ``(K + 1)``-variable quadratic programme; the training step is one backward pass
    of the weighted loss. The state holds one copy of the shared parameters.

    Resolved between the paper and LibMTL's trainer (``bacth_forward_FORUM``):
    the weights are ``softmax(α)`` and ``α`` trains with Adam, as there; the
    upper-level gradients are normalised to unit norm, as there (``normalize=False``
    uses them raw); the dual programme is the Lagrangian dual of the direction
    problem, ``½‖Σλ_i∇F_i + ν∇q‖² − νφ‖∇q‖²`` (LibMTL minimises the squared norm
    without the ``½`` and adds the constraint ``ν ≥ Σ λ_i π_i``, which changes ``λ̃``);
    LibMTL solves it with cvxpy, here accelerated projected gradient; the average's
    step decays per meta-update (``decay_every=1``), while LibMTL decays it per epoch
    (pass the number of batches per epoch as ``decay_every`` to match); the
    upper level uses the validation batch the caller passes (LibMTL draws a second
    half-size training batch); LibMTL stops the inner steps early when the loss
    exceeds ``1e5``, which is not modelled.

    Presence: a task absent from ``train_batch`` (``task_presence``) takes no part in
    ``f`` (``s`` is the softmax over the present tasks), keeps its logit and Adam
    moments and gets weight 0 in the step; a task absent from ``val_batch``
    (``val_presence``) is left out of the programme's simplex, keeps its ``λ̄`` and
    gets no share of the upper-level direction; with none present the update is zero
    and ``α`` stays. A task absent from the step's batch gets weight 0 there (and in
    the recorded ``weights``) whatever the meta-update was told.

    Args:
      task_loss_fn: ``(params, batch) -> [K]`` per-task losses (without extra keyword
        arguments); an absent task's loss must be finite.
      num_tasks: ``K``.
      inner_lr: ``> 0``, the inner steps' size.
      meta_lr: Adam's step size for ``α``.
      meta_optimizer: an optax transform for ``α`` in place of ``Adam(meta_lr)``
        (its per-task moments are kept for absent tasks like Adam's).
      inner_steps: ``T ≥ 1``.
      phi: ``φ ≥ 0`` (LibMTL's ``FORUM_phi``).
      ema_power: ``p ∈ (0, 1]``, the decay of the average's step.
      decay_every: meta-updates per decay of the average's step.
      normalize: normalise the upper-level gradients to unit norm.
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A balancer of kind ``"loss"`` with an offset (a ``FORUM``); its
      ``meta_update(state, params, train_batch, val_batch, *, task_presence=None,
      val_presence=None)`` returns the new state.

    Raises:
      ValueError: a bad ``num_tasks``, ``inner_lr``, ``meta_lr``, ``inner_steps``,
        ``phi``, ``ema_power`` or ``decay_every``.
      TypeError: a ``meta_optimizer`` that is not an optax transform.

    References:
      Ye, Lin, Cao, Zhang & Tsang, "A First-Order Multi-Gradient Algorithm for
      Multi-Objective Bi-Level Optimization", ECAI 2024, https://arxiv.org/abs/2401.09257
    """
    _validate.check_num_tasks(num_tasks, required=True)
    inner_lr = _validate.check_positive("inner_lr", inner_lr)
    meta_lr = _validate.check_positive("meta_lr", meta_lr)
    inner_steps = _validate.check_int("inner_steps", inner_steps)
    phi = _validate.check_number("phi", phi, low=0.0)
    ema_power = _validate.check_number("ema_power", ema_power, low=0.0, high=1.0, low_open=True)
    decay_every = _validate.check_int("decay_every", decay_every)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    meta_opt = _bilevel.meta_optimizer(meta_optimizer, meta_lr)

    def flags(params):
        return jax.tree_util.tree_leaves(_task_tree.resolve_mask(shared, params))

    def init(params):
        a = jnp.zeros((num_tasks,), jnp.float32)
        leaves = jax.tree_util.tree_leaves(params)
        direction = tuple(
            jnp.zeros(jnp.shape(x), jnp.result_type(x))
            for x, m in zip(leaves, flags(params), strict=True)
            if m
        )
        zeros = jnp.zeros((num_tasks,), jnp.float32)
        return FORUMState(
            a, meta_opt.init(a), zeros, jnp.zeros((), jnp.int32), zeros, zeros, direction
        )

    def weights_fn(losses, state, presence=None):
        w = state.step_weights.astype(losses.dtype)
        if presence is not None:
            w = jnp.where(presence, w, 0.0)
        return w, state._replace(weights=w)

    def offset(state):
        return state.direction

    def meta_update(
        state, params, train_batch, val_batch, *, task_presence=None, val_presence=None
    ):
        present = _bilevel.mask_of(task_presence, num_tasks, "task_presence")
        val_mask = _bilevel.mask_of(val_presence, num_tasks, "val_presence")
        s = _presence.masked_softmax(state.logits, present)

        def train_losses(p):
            return _bilevel.masked_losses(task_loss_fn, p, train_batch, present)

        losses, vjp = jax.vjp(train_losses, params)
        (grad_f,) = vjp(s.astype(losses.dtype))  # ∇_ω f = Σ_k s_k ∇L_k(ω)
        inner = _bilevel.sgd_steps(
            lambda p, b: _bilevel.masked_losses(task_loss_fn, p, b, present),
            params,
            train_batch,
            jax.lax.stop_gradient(s),
            inner_lr,
            inner_steps,
        )
        diff = (losses - train_losses(inner)).astype(s.dtype)
        grad_alpha = jnp.where(present, s * (diff - jnp.sum(s * diff)), 0.0)  # J_s ΔL
        mask = flags(params)
        val = _bilevel.task_jacobian(
            lambda p: _bilevel.masked_losses(task_loss_fn, p, val_batch, val_mask), params
        )
        val = [_presence.zero_absent(j, val_mask) for j, m in zip(val, mask, strict=True) if m]
        gf = [
            x.reshape(1, -1)
            for x, m in zip(jax.tree_util.tree_leaves(grad_f), mask, strict=True)
            if m
        ]
        gram = _bilevel.cross_gram(val, val)
        cross = _bilevel.cross_gram(val, gf)[:, 0]
        q_sq = jnp.sum(grad_alpha * grad_alpha) + _bilevel.cross_gram(gf, gf)[0, 0]
        lam_new, pi = forum_weights(
            gram, cross, q_sq, phi=phi, normalize=normalize, presence=val_mask
        )
        beta = (1.0 + (state.count // decay_every).astype(jnp.float32)) ** (-ema_power)
        lam = jnp.where(val_mask, state.lam + beta * (lam_new - state.lam), state.lam)
        lam_used = jnp.where(val_mask, lam, 0.0)
        nu = jnp.maximum(jnp.sum(lam_used * pi), 0.0)
        if normalize:
            norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
            scale = lam_used / jnp.where(norms > jnp.finfo(norms.dtype).tiny, norms, 1.0)
        else:
            scale = lam_used
        direction = tuple(
            (scale.astype(j.dtype) @ j).reshape(u.shape).astype(u.dtype)
            for j, u in zip(val, state.direction, strict=True)
        )
        keep = present & jnp.any(val_mask)  # no validation task: α and Adam stay
        logits, opt_state = _bilevel.meta_step(
            meta_opt, nu * grad_alpha, state.logits, state.meta_opt_state, keep
        )
        new = state._replace(
            logits=logits,
            meta_opt_state=opt_state,
            lam=lam,
            count=state.count + 1,
            step_weights=nu * s,
            direction=direction,
        )
        return _state.like(new, state)

    bal = _base.loss_balancer(init, weights_fn, shared=shared, offset=offset)
    out = FORUM(bal.init, bal.update, bal.spec)
    out.meta_update = meta_update
    return out
