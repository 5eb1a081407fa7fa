"""Geometric Loss Strategy (GLS): descend the geometric mean of the task losses.

Chennupati et al., "MultiNet++", CVPR 2019 Workshops,
https://arxiv.org/abs/1904.08492. The weights are
:func:`mtl_jax.weighting.gls_weights`.
"""

from __future__ import annotations

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _gls

__all__ = ["gls"]


def gls(
    *, eps: float = 1e-8, shared: MaskSpec = None, num_tasks: int | None = None
) -> _base.Balancer:
    """The gradient of the geometric mean ``(Π_k L_k)^{1/K}`` of the task losses.

    It is ``Σ_k w_k ∇L_k`` with ``w_k = (Π_j L_j)^{1/K} / (K L_k)``.

    The geometric mean is invariant to a per-task rescaling of the losses up to a
    constant factor, so no task dominates by its units alone; equivalently the
    update is ``GLS · ∇ mean_k log L_k``.

    Scale: with equal losses every weight is ``1/K`` (``1/K`` of equal weighting).

    Presence: the geometric mean is over the present tasks only (``K`` becomes
    the number present); an absent task gets weight 0.

    Modes: loss-only (one backward pass of ``Σ_k w_k L_k``).

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      eps: losses are clipped below at ``eps`` before the logarithm (losses must
        be positive; a zero loss would give an infinite weight).
      shared: leaves to weight (all by default); the others receive the plain sum.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Chennupati et al. 2019, https://arxiv.org/abs/1904.08492
    """
    _validate.check_num_tasks(num_tasks)
    eps = _validate.check_number("eps", eps, low=0.0, low_open=True)

    def init(params):
        del params
        return _state.init_weights_state(num_tasks)

    def weights_fn(losses, state, presence=None):
        w = _gls.gls_weights(losses, eps=eps, presence=presence)
        return w, _state.WeightsState(_state.record_weights(state.weights, w))

    return _base.loss_balancer(init, weights_fn, shared=shared)
