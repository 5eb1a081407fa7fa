"""MoDo: one projected stochastic step on the MGDA weights per update (two-sample).

Chen, Fernando, Ying & Chen, JMLR 2024, https://arxiv.org/abs/2305.20057. The
weight step is :func:`mtl_jax.weighting.modo_step`. Also home of
the two-sample plumbing shared with SDMGrad.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _routing
from mtl_jax.weighting import _modo
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["MoDoState", "modo"]


def _check_cross(cross: Any, k: int) -> jax.Array:
    a = jnp.asarray(cross)
    if a.shape != (k, k):
        raise ValueError(f"cross_gram must have shape ({k}, {k}) (J_1 J_2ᵀ), got {a.shape}")
    return a


def two_sample_balancer(
    init: Callable[[Any], Any], weights_fn: Callable[..., Any], *, shared: MaskSpec
) -> _base.Balancer:
    """A Gram balancer whose ``update`` also takes ``cross_gram=`` (``J_1 J_2ᵀ``).

    ``weights_fn(gram, losses, state, presence=None, *, cross)``: ``cross`` is the
    user's ``[K, K]`` matrix, or ``None`` (then the Gram matrix of the Jacobian
    being balanced stands in for it: the single-sample variant, also what the
    training step's Gramian route runs).
    """
    plain = _base.gram_balancer(init, functools.partial(weights_fn, cross=None), shared=shared)

    def update(task_grads, state, params=None, *, task_losses, task_presence=None, **extra):
        cross = extra.pop("cross_gram", None)
        if cross is None:
            return plain.update(
                task_grads, state, params, task_losses=task_losses, task_presence=task_presence
            )
        k = _routing.validate_task_inputs(task_grads, params, task_losses)
        cross = _check_cross(cross, k)
        fn = functools.partial(weights_fn, cross=cross)
        once = _base.gram_balancer(init, fn, shared=shared)
        return once.update(
            task_grads, state, params, task_losses=task_losses, task_presence=task_presence
        )

    return _base.Balancer(init, update, plain.spec)


class MoDoState(NamedTuple):
    lam: jax.Array  # [K] float32, λ_t (kept for absent tasks)
    weights: jax.Array  # [K] float32, weights applied at the last update


def modo(
    *,
    num_tasks: int | None = None,
    gamma: float = 0.1,
    rho: float = 0.1,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """MoDo: ``λ ← Π_Δ(λ − γ (J_1 J_2ᵀ + ρ I) λ)``, then the update ``Σ_k λ_k g_k``.

    MGDA's weights are tracked by one projected stochastic gradient step per
    update instead of being solved for (Algorithm 1 of the paper, eq. 2.9). The
    paper's step uses ``A = J_1 J_2ᵀ`` from two independent mini-batches: pass it
    as ``tx.update(jac, state, params, task_losses=..., cross_gram=A)`` (build it
    with :func:`mtl_jax.weighting.task_cross_gram`); ``jac`` is then the Jacobian
    the update is made of (the paper's ``z_3``, or the mean of the two batches'
    Jacobians, eq. 2.9b).
    Without ``cross_gram`` (and on the training step's Gramian route) the Gram
    matrix ``J Jᵀ`` of ``jac`` is used: the single-sample variant, biased for
    stochastic gradients.

    Scale: ``λ`` is on the simplex (MGDA's scale). The step ``γ A λ`` is not
    invariant to the gradients' scale: ``γ`` must suit ``‖g_k‖²``.

    Modes: full-parameter and representation mode (only ``G`` or ``A`` is needed).
    An absent task gets weight 0 and keeps its ``λ_k``; the step and the simplex
    are over the present tasks.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      num_tasks: ``K`` (required, keyword-only); ``λ_0 = 1/K``.
      gamma: step size ``γ > 0`` of the weights (paper's ``γ``; torchjd: 0.1).
      rho: ``ℓ₂`` regularisation ``ρ ≥ 0`` (torchjd: 0.1).
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Chen et al., "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
      Generalization and Conflict-Avoidance", JMLR 2024, https://arxiv.org/abs/2305.20057
    """
    _validate.check_num_tasks(num_tasks, required=True)
    gamma = _validate.check_number("gamma", gamma, low=0.0, low_open=True)
    rho = _validate.check_number("rho", rho, low=0.0)

    def init(params):
        del params
        lam = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
        return MoDoState(lam, lam)

    def weights_fn(gram, losses, state, presence=None, *, cross):
        del losses
        present = as_presence(presence, num_tasks)
        a = gram if cross is None else cross
        lam = _modo.modo_step(state.lam, a, gamma=gamma, rho=rho, presence=present)
        w = jnp.where(present, lam, 0.0)
        return w, MoDoState(lam, w)

    return two_sample_balancer(init, weights_fn, shared=shared)
