"""Krum / Multi-Krum and the trimmed mean: Byzantine-robust aggregation of the task gradients.

Blanchard et al. 2017, https://arxiv.org/abs/1703.02757 (Krum) and Yin et al.
2018, https://arxiv.org/abs/1803.01498 (trimmed mean), as torchjd's ``Krum`` and
``TrimmedMean``. The pure functions are :func:`mtl_jax.weighting.krum_weights`
and :func:`mtl_jax.weighting.trimmed_mean`.
"""

from __future__ import annotations

import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _robust
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["krum", "trimmed_mean"]


def krum(
    *,
    n_byzantine: int = 0,
    n_selected: int = 1,
    squared: bool = True,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """Krum (``n_selected=1``) or Multi-Krum: the mean of the most central task gradients.

    Task ``i``'s score is the sum of its squared distances to its ``K − f − 2``
    nearest other task gradients (``f = n_byzantine``; the paper's score of
    Section 4; ``squared=False`` sums plain distances, as torchjd's ``Krum``); the
    update is the mean of the ``n_selected`` gradients of lowest score,
    ``Σ_{i ∈ sel} g_i / m``. A gradient far from the others (an outlier task) is
    never selected. With fewer than ``f + 3`` (present) tasks the score is
    undefined and the update is the mean gradient.

    Scale: the weights sum to 1, so with ``K`` identical gradients the update is
    ``1/K`` of :func:`equal_weighting`'s.

    Modes: full-parameter and representation mode (only ``G`` is needed).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      n_byzantine: ``f ≥ 0``, how many task gradients may be adversarial.
      n_selected: ``m ≥ 1``, how many of the best-scored gradients are averaged.
      squared: squared distances in the score (paper) or plain ones (torchjd).
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Blanchard et al. 2017, https://arxiv.org/abs/1703.02757
    """
    _validate.check_num_tasks(num_tasks)
    f = _validate.check_int("n_byzantine", n_byzantine, low=0)
    m = _validate.check_int("n_selected", n_selected, low=1)
    if not isinstance(squared, bool):
        raise ValueError(f"squared must be a bool, got {squared!r}")
    if num_tasks is not None and m > num_tasks:
        raise ValueError(f"n_selected={m} exceeds num_tasks={num_tasks}")

    def init(params):
        del params
        return _state.init_weights_state(num_tasks)

    def weights_fn(gram, losses, state, presence=None):
        del losses
        w = _robust.krum_weights(
            gram, n_byzantine=f, n_selected=m, squared=squared, presence=presence
        )
        return w, _state.WeightsState(_state.record_weights(state.weights, w))

    return _base.gram_balancer(init, weights_fn, shared=shared)


def trimmed_mean(
    *, trim_number: int = 0, shared: MaskSpec = None, num_tasks: int | None = None
) -> _base.Balancer:
    """Coordinate-wise trimmed mean of the task gradients.

    For every coordinate of the shared leaves the ``b`` largest and ``b``
    smallest task components are dropped and the other ``K − 2b`` averaged
    (``b = trim_number``); with fewer than ``2b + 1`` (present) tasks the plain
    mean is used. ``trim_number=0`` is the mean gradient.

    Scale: with ``K`` identical gradients the update is ``1/K`` of
    :func:`equal_weighting`'s.

    Modes: full-parameter and representation mode (per coordinate of whatever
    Jacobian it is given).

    Cost: Jacobian (the per-task gradients of the shared leaves).

    Args:
      trim_number: ``b ≥ 0``.
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state has a ``[K]`` ``weights`` field of ones (1
        for a present task, 0 for an absent one): the update is not
        ``Σ_k w_k g_k`` (it trims per coordinate), so no task weights describe it.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"jacobian"``.

    References:
      Yin et al. 2018, https://arxiv.org/abs/1803.01498
    """
    _validate.check_num_tasks(num_tasks)
    b = _validate.check_int("trim_number", trim_number, low=0)

    def init(params):
        del params
        return _state.init_weights_state(num_tasks)

    def combine(leaves, losses, state, presence=None):
        del losses
        k = leaves[0].shape[0]
        present = as_presence(presence, k)
        out = [_robust.trimmed_mean(x, trim_number=b, presence=present) for x in leaves]
        w = present.astype(jnp.float32)
        return out, _state.WeightsState(_state.record_weights(state.weights, w))

    return _base.jacobian_balancer(init, combine, shared=shared)
