"""CR-MOGM: MGDA (or another Gram method) with its task weights smoothed across steps.

Zhou et al., NeurIPS 2022 (see :mod:`mtl_jax.weighting._cr_mogm`). The pure
functions are :func:`mtl_jax.weighting.cr_mogm_update` and
:func:`mtl_jax.weighting.mgda_present_weights`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _cr_mogm, _mgda, _qp
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["CRMOGMState", "cr_mogm"]


class CRMOGMState(NamedTuple):
    smoothed: jax.Array  # [K] float32, λ_t (carried; kept for absent tasks)
    task_steps: jax.Array  # [K] int32, updates each task has taken part in
    base_state: Any  # state of the wrapped Gram balancer (None for MGDA)
    weights: jax.Array  # [K] float32, weights applied at the last update


def cr_mogm(
    *,
    num_tasks: int | None = None,
    alpha: float = 0.9,
    initial_weights: jax.typing.ArrayLike | None = None,
    base: _base.Balancer | None = None,
    normalization: _mgda.Normalization = "none",
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """CR-MOGM: ``d = Σ_k λ_{t,k} g_k`` with ``λ_t = α λ_{t−1} + (1 − α) λ̂_t``.

    ``λ̂_t`` are the MGDA weights of the current Jacobian (min-norm point of the
    convex hull, :func:`mgda`) or those of another Gram balancer ``base``. The
    moving average reduces the correlation between the weights and the
    mini-batch noise, which is what makes stochastic MGDA-type methods converge
    (Zhou et al. 2022, Theorem 2). Corollary 1 of the paper lets ``α`` grow
    towards 1 as the learning rate decays; ``α`` is fixed here.

    Scale: with MGDA the weights stay on the simplex (an average of simplex
    points), so the update is MGDA's scale.

    Modes: full-parameter and representation mode (only ``G`` is needed). An
    absent task gets weight 0 and keeps its ``λ`` and step count; the fresh
    weights are computed over the present tasks only.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      alpha: ``α ∈ [0, 1]``, the weight of the past (0: no smoothing).
      initial_weights: ``[K]`` ``λ_0``; default: ``λ_0 = λ̂_1`` per task (the first
        smoothed weights of a task are its first fresh ones).
      base: a Gram :class:`~mtl_jax.balancers.Balancer` whose weights are smoothed
        (e.g. ``upgrad()``); default: MGDA with the options below.
      normalization: MGDA's gradient normalisation (see :func:`mgda`).
      num_iters: cap on MGDA's simplex QP iterations.
      tol: the QP's stopping tolerance.
      polish_iters: cap on the QP's active-set steps.
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Zhou et al., "On the Convergence of Stochastic Multi-Objective Gradient
      Manipulation and Beyond", NeurIPS 2022,
      https://proceedings.neurips.cc/paper_files/paper/2022/hash/f91bd64a3620aad8e70a27ad9cb3ca57-Abstract-Conference.html
    """
    _validate.check_num_tasks(num_tasks, required=True)
    alpha = _validate.check_number("alpha", alpha, low=0.0, high=1.0)
    if base is not None:
        base = _base.check_balancer(base, "base")
        if base.spec.kind != "gram":
            raise ValueError(f"base must be a Gram balancer, got one of kind {base.spec.kind!r}")
    else:
        if normalization not in _mgda._NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_mgda._NORMALIZATIONS}, got {normalization!r}"
            )
        _qp.check_solver_args(num_iters, tol, polish_iters)
    init_w = None
    if initial_weights is not None:
        init_w = jnp.asarray(initial_weights, jnp.float32)
        if init_w.shape != (num_tasks,) or not bool(jnp.all(jnp.isfinite(init_w))):
            raise ValueError(
                f"initial_weights must be a finite [{num_tasks}] vector, got {initial_weights!r}"
            )

    def init(params):
        lam = jnp.zeros((num_tasks,), jnp.float32) if init_w is None else init_w
        steps = jnp.zeros((num_tasks,), jnp.int32)
        base_state = None if base is None else base.init(params)
        return CRMOGMState(lam, steps, base_state, lam)

    def weights_fn(gram, losses, state, presence=None):
        present = as_presence(presence, num_tasks)
        if base is None:
            fresh = _cr_mogm.mgda_present_weights(
                gram,
                losses,
                normalization=normalization,
                presence=present,
                num_iters=num_iters,
                tol=tol,
                polish_iters=polish_iters,
            )
            base_state = None
        else:
            extra = {} if presence is None else {"presence": present}
            fresh, base_state = base.spec.gram_weights(gram, losses, state.base_state, **extra)
        first = state.task_steps == 0 if init_w is None else False
        lam = _cr_mogm.cr_mogm_update(
            state.smoothed, fresh.astype(jnp.float32), alpha=alpha, first=first, presence=present
        )
        steps = state.task_steps + present.astype(jnp.int32)
        w = jnp.where(present, lam, 0.0)
        return w, CRMOGMState(lam, steps, base_state, w)

    return _base.gram_balancer(init, weights_fn, shared=shared)
