"""ConFIG: the update with equal cosine to every task gradient.

Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed
Neural Networks", 2024, https://arxiv.org/abs/2408.11104. The weights come from
:func:`mtl_jax.weighting.conflict_free_weights`.
"""

from __future__ import annotations

import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _conflict_free

__all__ = ["conflict_free"]


def conflict_free(
    *,
    pref_vector: jnp.ndarray | None = None,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """ConFIG (conflict-free inverse gradients).

    The direction ``û ∝ Û⁺ 1`` (``Û``: the unit task gradients) has the same cosine
    with every task gradient, positive whenever the unit gradients are linearly
    independent, so it conflicts with no task; its length is the sum of the
    gradients' projections on it:

        d = (Σ_i ⟨g_i, û⟩) û,     û = Û⁺p / ‖Û⁺p‖.

    ``pref_vector`` sets other target cosine ratios. Only ``G`` is needed (see
    :func:`mtl_jax.weighting.conflict_free_weights`). The momentum variant
    (M-ConFIG, one task's gradient per step) is not included.

    Scale: ``⟨Σ_i g_i, û⟩ û`` is the projection of :func:`equal_weighting`'s
    update on ``û``, so ``‖d‖`` is at most EW's and equal to it when the gradients
    are identical.

    Modes: full-parameter and representation mode.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      pref_vector: ``[K]`` positive target cosines (default ones).
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Liu et al. 2024, https://arxiv.org/abs/2408.11104
    """
    _validate.check_num_tasks(num_tasks)
    pref = None
    if pref_vector is not None:
        pref = jnp.asarray(pref_vector, jnp.float32)
        if pref.ndim != 1 or not bool(jnp.all(pref > 0)):
            raise ValueError(f"pref_vector must be a positive [K] vector, got {pref}")
        if num_tasks is not None and pref.shape != (num_tasks,):
            raise ValueError(f"pref_vector has shape {pref.shape} but num_tasks={num_tasks}")

    return _base.stateless_gram_balancer(
        lambda g, losses, presence=None: _conflict_free.conflict_free_weights(
            g, pref_vector=pref, presence=presence
        ),
        shared=shared,
        num_tasks=num_tasks,
    )
