"""PCGrad: project away the conflicting components of the task gradients.

Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020, https://arxiv.org/abs/2001.06782. The Gram-matrix form of the
projection is :func:`mtl_jax.weighting.pcgrad_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _pcgrad

__all__ = ["PCGradState", "pcgrad"]


class PCGradState(NamedTuple):
    key: jax.Array  # [2] uint32 raw key data (jax.random.key_data) for the next orders
    weights: jax.Array | None  # [K] weights of the last update (None without num_tasks)


def pcgrad(
    *, seed: int = 0, shared: MaskSpec = None, num_tasks: int | None = None
) -> _base.Balancer:
    """PCGrad: ``Σ_i g_i^PC`` where each ``g_i`` is projected off conflicting ``g_j``.

    For every task ``i`` and the other tasks ``j`` in a random order, if
    ``⟨g_i^PC, g_j⟩ < 0`` then ``g_i^PC ← g_i^PC − ⟨g_i^PC, g_j⟩ / ‖g_j‖² g_j``
    (Algorithm 1 of the paper). The projections are computed on the Gram matrix
    ``G = J Jᵀ`` and the update is ``Σ_k w_k g_k``. A fresh order is drawn for every
    task at every update from the key kept in the state.

    Scale: the same as :func:`equal_weighting` when no two gradients conflict
    (all weights 1); conflicting components are removed, never rescaled.

    Modes: full-parameter (Gram over the shared leaves) and representation mode
    (Gram of the gradients w.r.t. the shared representation).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      seed: seed of the PRNG key drawing the projection orders.
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Yu et al. 2020, https://arxiv.org/abs/2001.06782
    """
    _validate.check_num_tasks(num_tasks)
    seed = _validate.check_seed(seed)

    def init(params):
        del params
        return PCGradState(_state.key_data(seed), _state.init_weights(num_tasks))

    def weights_fn(gram, losses, state, presence=None):
        del losses
        key, (sub,) = _state.split_key(state.key)
        w = _pcgrad.pcgrad_weights(gram, sub, presence=presence)
        return w, PCGradState(key, _state.record_weights(state.weights, w))

    return _base.gram_balancer(init, weights_fn, shared=shared)
