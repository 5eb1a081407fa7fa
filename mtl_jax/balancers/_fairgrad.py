"""FairGrad: α-fair allocation of the update among tasks, ``G w = w^{-1/α}``.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
https://arxiv.org/abs/2402.15638. The weights come from
:func:`mtl_jax.weighting.fairgrad_weights`.
"""

from __future__ import annotations

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _fairgrad

__all__ = ["fairgrad"]


def fairgrad(
    *,
    alpha: float = 1.0,
    reg_eps: float = 1e-5,
    num_iters: int = 20,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """FairGrad: the update ``d = Σ_k w_k g_k`` whose task utilities are α-fair.

    Task ``i``'s utility is ``⟨g_i, d⟩ = (Gw)_i``; maximising the α-fair sum of
    utilities over a trust region gives the condition ``(Gw)_i = w_i^{−1/α}``,
    ``w > 0``, solved by Newton's method on its convex potential (see
    :func:`mtl_jax.weighting.fairgrad_weights`). ``α = 1`` is proportional
    fairness (Nash-MTL's equation, without its norm clipping); larger ``α`` moves
    toward max-min fairness; ``α = 0`` gives uniform weights ``1/K``.

    Scale: not tied to :func:`equal_weighting`'s. The update has
    ``‖d‖² = Σ_i w_i^{1−1/α}`` and scales as ``c^{(1−α)/(1+α)}`` when every gradient is
    scaled by ``c`` (scale-free for ``α = 1``, where ``‖d‖ = √K``). Use a learning
    rate tuned for the method, as the paper does.

    Modes: full-parameter and representation mode (only ``G`` is needed).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      alpha: fairness parameter ``α ≥ 0`` (the paper tunes it per benchmark, e.g. 2).
      reg_eps: ridge on the trace-normalised Gram matrix, which keeps the weights
        finite when gradients are linearly dependent.
      num_iters: Newton iterations (the solver's tolerance is documented in
        :mod:`mtl_jax.weighting._fairgrad`).
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Ban & Ji 2024, https://arxiv.org/abs/2402.15638
    """
    _validate.check_num_tasks(num_tasks)
    alpha = _validate.check_number("alpha", alpha, low=0.0)
    reg_eps = _validate.check_number("reg_eps", reg_eps, low=0.0)
    num_iters = _validate.check_int("num_iters", num_iters)

    return _base.stateless_gram_balancer(
        lambda g, losses, presence=None: _fairgrad.fairgrad_weights(
            g, alpha=alpha, reg_eps=reg_eps, num_iters=num_iters, presence=presence
        ),
        shared=shared,
        num_tasks=num_tasks,
    )
