"""Random Loss Weighting (RLW): a random convex combination of the task losses each step.

Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A Litmus
Test for Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603. The
sampler is :func:`mtl_jax.weighting.rlw_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _rlw

__all__ = ["RLWState", "rlw"]


class RLWState(NamedTuple):
    key: jax.Array  # [2] uint32 raw key data (jax.random.key_data) for the next draw
    weights: jax.Array  # [K], weights used at the last update


def rlw(
    *,
    num_tasks: int | None = None,
    seed: int = 0,
    distribution: _rlw.Distribution = "normal",
    shared: MaskSpec = None,
) -> _base.Balancer:
    """Random loss weighting: ``w = softmax(λ̃)``, ``λ̃ ~ N(0, I)`` drawn afresh every update.

    The key lives in the state and is split at every call, so a jitted step is
    reproducible from ``seed``.

    Presence: the weights are drawn on the simplex of the present tasks (an
    absent task gets 0): they have the distribution of an ``|S|``-task draw, not
    its values (see :func:`mtl_jax.weighting.rlw_weights`). The key is split at
    every call, present tasks or not.

    Scale: the weights sum to 1, so on average the update is ``1/K`` of
    :func:`equal_weighting`'s (as in the paper and LibMTL).

    Modes: loss-only (one backward pass of ``Σ_k w_k L_k``).

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      seed: seed of the PRNG key kept in the state.
      distribution: ``"normal"`` (paper default), ``"uniform"`` or ``"dirichlet"``;
        see :func:`mtl_jax.weighting.rlw_weights`.
      shared: leaves to weight (all by default); the others receive the plain sum.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Lin et al. 2022, https://arxiv.org/abs/2111.10603
    """
    _validate.check_num_tasks(num_tasks, required=True)
    if distribution not in _rlw.DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {_rlw.DISTRIBUTIONS}, got {distribution!r}")
    seed = _validate.check_seed(seed)

    def init(params):
        del params
        return RLWState(_state.key_data(seed), _state.init_weights(num_tasks))

    def weights_fn(losses, state, presence=None):
        _validate.check_losses(losses, num_tasks=num_tasks)
        key, (sub,) = _state.split_key(state.key)
        w = _rlw.rlw_weights(sub, num_tasks=num_tasks, distribution=distribution, presence=presence)
        return w, RLWState(key, w)

    return _base.loss_balancer(init, weights_fn, shared=shared)
