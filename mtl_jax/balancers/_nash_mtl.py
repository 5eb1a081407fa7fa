"""Nash-MTL: the Nash bargaining solution among tasks, ``G α = 1/α``.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022,
https://arxiv.org/abs/2202.01017. The weights come from
:func:`mtl_jax.weighting.nash_mtl_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _nash_mtl

__all__ = ["NashMTLState", "nash_mtl"]


class NashMTLState(NamedTuple):
    """State of :func:`nash_mtl` (``weights`` and ``alpha`` are None without ``num_tasks``)."""

    weights: jax.Array | None  # [K] float32 weights used at the last update (after clipping)
    alpha: jax.Array | None  # [K] float32 last solution before clipping: warm start, reuse
    count: jax.Array  # [] int32 number of updates so far


def nash_mtl(
    *,
    max_norm: float = 1.0,
    update_weights_every: int = 1,
    num_iters: int = 20,
    reg_eps: float = 1e-5,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """Nash-MTL: ``d = Jᵀα`` with ``α_i ⟨g_i, d⟩ = 1`` for every task.

    The Nash bargaining solution of the tasks' utilities ``⟨g_i, d⟩`` over a ball:
    it is invariant to the scale of each task's gradient up to its own weight
    (``α_i`` absorbs it) and, for linearly independent gradients, a descent
    direction for every task (``⟨g_i, d⟩ = 1/α_i > 0``). ``Gα = 1/α`` is solved by
    Newton's method warm-started from the previous step (the paper warm-starts its
    convex-concave iterations the same way).

    Scale: ``‖d‖ = √K`` before clipping, whatever the scale of the gradients, then
    clipped to ``max_norm`` (the authors' default 1.0; ``0`` disables clipping). It
    is not tied to :func:`equal_weighting`'s scale.

    Modes: full-parameter and representation mode (only ``G`` is needed).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      max_norm: clip the update norm to this value (0 disables).
      update_weights_every: recompute ``α`` every this many updates and reuse the
        last ``α`` in between (the paper's speed-up); needs ``num_tasks`` when > 1.
      num_iters: Newton iterations of the solver.
      reg_eps: ridge on the trace-normalised Gram matrix; keeps ``α`` finite when
        gradients are linearly dependent (e.g. opposite), where the bargaining
        problem has no solution.
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights, and the previous ``α``
        warm-starts the solver.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"`` whose state is a
      :class:`NashMTLState`.

    References:
      Navon et al. 2022, https://arxiv.org/abs/2202.01017
    """
    _validate.check_num_tasks(num_tasks)
    max_norm = _validate.check_number("max_norm", max_norm, low=0.0)
    update_weights_every = _validate.check_int("update_weights_every", update_weights_every)
    if update_weights_every > 1 and num_tasks is None:
        raise ValueError(
            f"update_weights_every={update_weights_every} needs num_tasks to keep the weights"
        )
    num_iters = _validate.check_int("num_iters", num_iters)
    reg_eps = _validate.check_number("reg_eps", reg_eps, low=0.0)

    def init(params):
        del params
        return NashMTLState(
            weights=_state.init_weights(num_tasks),
            alpha=_state.init_weights(num_tasks, 0.0),
            count=jnp.zeros((), jnp.int32),
        )

    def weights_fn(gram, losses, state, presence=None):
        del losses
        keep = state.alpha is not None
        if keep:
            _validate.check_num_tasks(
                state.alpha.shape[0], got=gram.shape[0], source="the task Jacobian"
            )
        warm = state.count > 0

        def solve(_):
            start = jnp.where(warm, state.alpha, jnp.nan) if keep else None
            a = _nash_mtl.nash_mtl_weights(
                gram, init=start, reg_eps=reg_eps, num_iters=num_iters, presence=presence
            )
            if keep and presence is not None:  # an absent task's warm start is kept
                a = jnp.where(presence, a, state.alpha)
            return a.astype(jnp.float32)

        if update_weights_every == 1:
            alpha = solve(None)
        else:
            due = (state.count % update_weights_every) == 0
            alpha = jax.lax.cond(due, solve, lambda _: state.alpha, None)
        w = alpha if presence is None else jnp.where(presence, alpha, 0.0)
        if max_norm > 0:
            w = _nash_mtl.clip_update_norm(gram, w, max_norm)
        new = NashMTLState(
            weights=_state.record_weights(state.weights, w),
            alpha=alpha if keep else state.alpha,
            count=state.count + 1,
        )
        return w, new

    return _base.gram_balancer(init, weights_fn, shared=shared)
