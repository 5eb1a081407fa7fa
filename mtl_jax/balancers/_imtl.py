"""IMTL-G: impartial gradient weighting (equal projections on the task directions).

Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
https://openreview.net/forum?id=IMPnRXEWpvr. The solver is
:func:`mtl_jax.weighting.imtl_weights`.
"""

from __future__ import annotations

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _imtl

__all__ = ["imtl"]


def imtl(*, shared: MaskSpec = None, num_tasks: int | None = None) -> _base.Balancer:
    """IMTL-G: ``d = Σ_k α_k g_k`` with ``Σ α = 1`` and equal ``⟨d, g_k / ‖g_k‖⟩``.

    The aggregate makes the same angle-weighted progress on every task: its
    projection onto each unit task gradient is the same. On the Gram matrix,
    ``α ∝ G⁺ d`` with ``d_k = ‖g_k‖`` (pseudo-inverse for dependent gradients, as
    torchjd; the paper's closed form when ``G`` is invertible). This is the
    gradient part (IMTL-G) of the paper; the loss part (IMTL-L, learnable loss
    scales) is not included.

    Scale: the weights sum to 1, so with ``K`` identical gradients the update is
    ``1/K`` of :func:`equal_weighting`'s.

    Modes: full-parameter (Gram over the shared leaves) and representation mode
    (Gram of the gradients w.r.t. the shared representation, as the paper does
    for its encoder output).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Liu et al. 2021, https://openreview.net/forum?id=IMPnRXEWpvr
    """
    _validate.check_num_tasks(num_tasks)

    return _base.stateless_gram_balancer(
        lambda g, losses, presence=None: _imtl.imtl_weights(g, presence=presence),
        shared=shared,
        num_tasks=num_tasks,
    )
