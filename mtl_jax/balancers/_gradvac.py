"""GradVac: gradient vaccine, adaptive cosine targets between task gradients.

Wang, Tsvetkov, Firat & Cao, ICLR 2021, https://arxiv.org/abs/2010.05874. The
Gram-matrix form is :func:`mtl_jax.weighting.gradvac_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _gradvac

__all__ = ["GradVacState", "gradvac"]


class GradVacState(NamedTuple):
    key: jax.Array  # [2] uint32 raw key data (jax.random.key_data) for the next orders
    targets: jax.Array  # [K, K] float32 EMA cosine targets φ̂ (zeros before the first update)
    weights: jax.Array  # [K] float32, weights of the last update


def gradvac(
    *,
    num_tasks: int | None = None,
    beta: float = 0.5,
    eps: float = 1e-8,
    seed: int = 0,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """GradVac: lift each pairwise cosine ``cos(g_i, g_j)`` up to an EMA target.

    When ``cos(g_i^PC, g_j) < φ̂_ij`` a multiple of ``g_j`` is added to ``g_i^PC``
    so that the cosine becomes ``φ̂_ij``; the targets follow an EMA (rate ``beta``)
    of the observed cosines and start at 0, so the first update is PCGrad's.
    The update is ``Σ_i g_i^PC``. This is the paper's whole-model variant (one
    target per task pair over all shared leaves); per-layer targets are not built in
    (apply one ``gradvac`` per parameter group with ``optax.partition`` for that).

    Scale: the same as :func:`equal_weighting` when every cosine is above its
    target (all weights 1).

    Modes: full-parameter (Gram over the shared leaves) and representation mode.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      num_tasks: ``K`` (required). The ``[K, K]`` targets live in the state, whose
        shapes are fixed at ``init`` before any data is seen; without them every
        update would silently be PCGrad's.
      beta: EMA rate of the cosine targets, in ``[0, 1]``.
      eps: added to denominators.
      seed: seed of the PRNG key drawing the visiting orders.
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Wang et al. 2021, https://arxiv.org/abs/2010.05874
    """
    if num_tasks is None:
        raise ValueError(
            "gradvac needs num_tasks=K: its [K, K] cosine targets live in the state, which is "
            "built before K is seen (without them every update would be PCGrad's)"
        )
    _validate.check_num_tasks(num_tasks)
    beta = _validate.check_number("beta", beta, low=0.0, high=1.0)
    eps = _validate.check_number("eps", eps, low=0.0)
    seed = _validate.check_seed(seed)

    def init(params):
        del params
        k = num_tasks
        return GradVacState(
            _state.key_data(seed), jnp.zeros((k, k), jnp.float32), _state.init_weights(k)
        )

    def weights_fn(gram, losses, state, presence=None):
        del losses
        k = gram.shape[0]
        _validate.check_num_tasks(num_tasks, got=k, source="the task Jacobian")
        key, (sub,) = _state.split_key(state.key)
        w, new_targets = _gradvac.gradvac_weights(
            gram, state.targets, sub, beta=beta, eps=eps, presence=presence
        )
        return w, GradVacState(key, new_targets, _state.record_weights(state.weights, w))

    return _base.gram_balancer(init, weights_fn, shared=shared)
