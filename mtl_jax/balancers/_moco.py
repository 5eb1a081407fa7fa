"""MoCo: stochastic MGDA with a tracked Jacobian and tracked weights.

Fernando et al., ICLR 2023, https://arxiv.org/abs/2210.04650. The steps are
:func:`mtl_jax.weighting.moco_track` and :func:`mtl_jax.weighting.moco_weight_step`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _task_tree, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _moco
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["MoCoState", "moco"]


class MoCoState(NamedTuple):
    tracked: tuple  # per shared leaf, [K, *leaf.shape] float32: Y (tracked Jacobian)
    lam: jax.Array  # [K] float32, λ (kept for absent tasks)
    task_steps: jax.Array  # [K] int32, tracking steps each task has taken
    step: jax.Array  # [] int32, weight steps taken
    weights: jax.Array  # [K] float32, λ applied (to Y) at the last update


def moco(
    *,
    num_tasks: int | None = None,
    beta: float = 0.5,
    beta_decay: float = 0.5,
    gamma: float = 0.1,
    gamma_decay: float = 0.5,
    rho: float = 0.0,
    normalization: str = "none",
    projection: str = "simplex",
    shared: MaskSpec = None,
) -> _base.Balancer:
    """MoCo: the update ``Yᵀλ`` with ``Y`` a moving average of the task Jacobian.

    Per update ``t = 1, 2, …`` (Algorithm 1 of the paper):
    ``Y ← Y − β_t (Y − J)`` with ``β_t = β / t^{beta_decay}`` (``t`` counted per
    task), then ``λ ← Π(λ − γ_t (Y Yᵀ + ρ I) λ)`` with ``γ_t = γ / t^{gamma_decay}``,
    and the update is ``Σ_k λ_k Y_k`` — made of the *tracked* gradients, not of
    ``J``. ``Y_0 = 0``, ``λ_0 = 1/K``.

    Differences between the paper and LibMTL's ``MoCo`` (the authors' code), and
    the choices made (defaults follow the paper, options give LibMTL):

    * LibMTL rescales each task gradient to the norm of its loss,
      ``g_k ← g_k L_k / (‖g_k‖ + 10⁻⁸)``, before tracking; the paper tracks raw
      gradients. ``normalization="loss"`` gives LibMTL's.
    * LibMTL maps the stepped weights with a ``softmax``; the paper projects them
      onto the simplex. ``projection="softmax"`` gives LibMTL's.
    * The paper's analysis projects ``Y`` onto a bounded set; LibMTL does not, nor
      do we.
    * Step sizes: LibMTL's schedule ``β/t^σ``, ``γ/t^σ`` (defaults 0.5, 0.5, 0.1,
      0.5) is used; the paper's theorems use decaying steps of that form.

    The state holds ``Y``: ``K`` times the shared parameters' memory.

    Scale: ``λ`` is on the simplex (MGDA's scale, on the tracked gradients).

    Modes: full-parameter only (``Y`` is per parameter). An absent task gets
    weight 0; its rows of ``Y``, ``λ_k`` and step count are left unchanged; the
    weight step is over the present tasks.

    Cost: Jacobian (the per-task gradients of the shared leaves).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      beta: ``β`` of the tracking step, in ``(0, 1]``.
      beta_decay: ``σ_β ≥ 0`` of ``β_t = β / t^{σ_β}``.
      gamma: ``γ > 0`` of the weight step.
      gamma_decay: ``σ_γ ≥ 0`` of ``γ_t = γ / t^{σ_γ}``.
      rho: ``ρ ≥ 0``, the ``ℓ₂`` regularisation of the weight step.
      normalization: ``"none"`` (paper) or ``"loss"`` (LibMTL: ``g_k L_k / ‖g_k‖``).
      projection: ``"simplex"`` (paper) or ``"softmax"`` (LibMTL).
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"jacobian"``; its ``init``
      needs ``params``. The recorded weights are ``λ``, applied to ``Y``.

    References:
      Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning: A
      Provably Convergent Approach", ICLR 2023, https://arxiv.org/abs/2210.04650
    """
    _validate.check_num_tasks(num_tasks, required=True)
    beta = _validate.check_number("beta", beta, low=0.0, high=1.0, low_open=True)
    beta_decay = _validate.check_number("beta_decay", beta_decay, low=0.0)
    gamma = _validate.check_number("gamma", gamma, low=0.0, low_open=True)
    gamma_decay = _validate.check_number("gamma_decay", gamma_decay, low=0.0)
    rho = _validate.check_number("rho", rho, low=0.0)
    if normalization not in ("none", "loss"):
        raise ValueError(f"normalization must be 'none' or 'loss', got {normalization!r}")
    if projection not in ("simplex", "softmax"):
        raise ValueError(f"projection must be 'simplex' or 'softmax', got {projection!r}")
    k = num_tasks

    def init(params):
        if params is None:
            raise ValueError("moco's init needs params (its state is shaped like them)")
        leaves = jax.tree_util.tree_leaves(params)
        try:
            flags = jax.tree_util.tree_leaves(_task_tree.resolve_mask(shared, params))
        except ValueError as e:
            raise ValueError(f"shared=: {e}") from None
        ys = tuple(jnp.zeros((k, *jnp.shape(p)), jnp.float32) for p, m in zip(leaves, flags) if m)
        lam = jnp.full((k,), 1.0 / k, jnp.float32)
        return MoCoState(ys, lam, jnp.zeros((k,), jnp.int32), jnp.zeros((), jnp.int32), lam)

    def combine(leaves, losses, state, presence=None):
        if len(leaves) != len(state.tracked) or any(
            x.shape != y.shape for x, y in zip(leaves, state.tracked)
        ):
            raise ValueError(
                "moco's state does not match the Jacobian it is given: init it with the "
                "params it balances (full-parameter mode only)"
            )
        present = as_presence(presence, k)
        grads = [x.astype(jnp.float32) for x in leaves]
        if normalization == "loss":
            sq = sum(jnp.sum(jnp.reshape(jnp.square(g), (k, -1)), axis=1) for g in grads)
            factor = losses.astype(jnp.float32) / (jnp.sqrt(sq) + 1e-8)
            grads = [g * jnp.reshape(factor, (k,) + (1,) * (g.ndim - 1)) for g in grads]
        task_steps = state.task_steps + present.astype(jnp.int32)
        beta_t = beta / jnp.maximum(task_steps, 1).astype(jnp.float32) ** beta_decay
        ys = _moco.moco_track(list(state.tracked), grads, beta=beta_t, presence=present)
        step = state.step + 1
        gamma_t = gamma / step.astype(jnp.float32) ** gamma_decay
        yy = _task_tree.gram(ys)
        lam = _moco.moco_weight_step(
            state.lam, yy, gamma=gamma_t, rho=rho, projection=projection, presence=present
        )
        w = jnp.where(present, lam, 0.0)
        out = [_task_tree.combine(w, [y])[0].astype(x.dtype) for y, x in zip(ys, leaves)]
        return out, MoCoState(tuple(ys), lam, task_steps, step, w)

    return _base.jacobian_balancer(init, combine, shared=shared, representation=False)
