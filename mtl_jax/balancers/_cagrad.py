"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021, https://arxiv.org/abs/2110.14048. The jit-compatible dual
solver is :func:`mtl_jax.weighting.cagrad_weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _cagrad

__all__ = ["CAGradState", "cagrad"]


class CAGradState(NamedTuple):
    """State of :func:`cagrad`.

    Attributes:
      weights: ``[K]`` float32 weights of the last update (``None`` without
        ``num_tasks``), as :func:`~mtl_jax.balancers.task_weights` reads them.
      converged: scalar bool: whether the last update's dual solve met its
        tolerance (``True`` before the first update). A ``False`` here means the
        direction may violate the ball constraint or be far from the optimum:
        raise ``num_iters`` or inspect the Gram matrix (e.g. for NaNs).
    """

    weights: jax.Array | None
    converged: jax.Array


def cagrad(
    *,
    c: float = 0.5,
    rescale: int = 1,
    num_iters: int = 50,
    tol: float = 1e-6,
    polish_iters: int = 20,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """CAGrad: the direction near the average gradient that best helps the worst task.

    ``d = argmax_{‖d − g₀‖ ≤ c‖g₀‖} min_k ⟨g_k, d⟩`` with ``g₀ = (1/K) Σ_k g_k``, found
    through its dual ``min_{w ∈ Δ} ⟨g_w, g₀⟩ + c‖g₀‖ ‖g_w‖``:
    ``d = g₀ + c‖g₀‖/‖g_w‖ · g_w``. ``c = 0`` is the average gradient; large ``c``
    approaches MGDA's direction.

    Scale: as the authors' code, built on the *average* gradient: with ``K``
    identical gradients the update is ``(1 + c)/(K r)`` of
    :func:`equal_weighting`'s, where ``r = 1 + c²`` for ``rescale=1`` (default),
    ``1 + c`` for ``rescale=2`` and ``1`` for ``rescale=0``.

    Modes: full-parameter (Gram over the shared leaves) and representation mode
    (Gram of the gradients w.r.t. the shared representation).

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      c: radius of the ball around ``g₀``, relative to ``‖g₀‖`` (paper: 0.4 on
        NYUv2/Cityscapes, 0.5 the LibMTL default).
      rescale: ``0``, ``1`` or ``2``: divide ``d`` by ``1``, ``1 + c²`` or ``1 + c``.
      num_iters: cap on the outer steps of the dual solver (see
        :func:`mtl_jax.weighting.cagrad_dual`).
      tol: the dual solver's relative tolerance.
      polish_iters: cap on the active-set steps of each simplex QP.
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"`` whose state is a
      :class:`CAGradState` (``converged`` says whether the last dual solve met its
      tolerance).

    References:
      Liu et al. 2021, https://arxiv.org/abs/2110.14048
    """
    _validate.check_num_tasks(num_tasks)
    _cagrad.check_args(c, num_iters, tol, polish_iters)
    if rescale not in (0, 1, 2):
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")

    def init(params):
        del params
        return CAGradState(_state.init_weights(num_tasks), jnp.ones((), bool))

    def weights_fn(g, losses, state, presence=None):
        del losses
        w, converged = _cagrad.cagrad_weights(
            g,
            c=c,
            presence=presence,
            rescale=rescale,
            num_iters=num_iters,
            tol=tol,
            polish_iters=polish_iters,
            return_converged=True,
        )
        return w, CAGradState(_state.record_weights(state.weights, w), converged)

    return _base.gram_balancer(init, weights_fn, shared=shared)
