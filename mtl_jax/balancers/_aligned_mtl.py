"""Aligned-MTL: make the task gradients orthogonal with equal norms, then sum.

Senushkin et al., "Independent Component Alignment for Multi-Task Learning",
CVPR 2023, https://arxiv.org/abs/2305.19000. The weights come from
:func:`mtl_jax.weighting.aligned_mtl_weights`.
"""

from __future__ import annotations

import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _aligned_mtl

__all__ = ["aligned_mtl"]


def aligned_mtl(
    *,
    pref_vector: jnp.ndarray | None = None,
    scale_mode: _aligned_mtl.ScaleMode = "min",
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """Aligned-MTL: gradients aligned to condition number 1, combined by ``p``.

    With ``G = VΛVᵀ``, the aligned task gradients ``Ĵ = √λ_s V Λ^{-1/2} Vᵀ J`` have
    Gram matrix ``λ_s I`` on the gradients' span: they are orthogonal, so no task
    dominates or conflicts with another, and have a common norm ``√λ_s`` set by
    ``scale_mode`` (the smallest eigenvalue by default, as in the paper). The
    update is ``Ĵᵀp = Jᵀ(Bp)``; only ``G`` is needed.

    Scale: ``‖d‖ ≤ ‖p‖ √λ_s`` (equality when ``J`` has full row rank). With the
    default ``p = 1`` (the paper's code and LibMTL; torchjd uses ``1/K``),
    ``scale_mode="min"`` and orthogonal gradients this is at most
    :func:`equal_weighting`'s ``‖Σ_k g_k‖``, with equality when their norms are equal.

    Modes: full-parameter and representation mode (the paper's "Aligned-MTL-UB").

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      pref_vector: ``[K]`` task preferences (default ones).
      scale_mode: ``"min"``, ``"median"`` or ``"rmse"`` (eigenvalue setting the norm).
      shared: leaves to balance; the others receive the plain sum over tasks.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"``.

    References:
      Senushkin et al. 2023, https://arxiv.org/abs/2305.19000
    """
    _validate.check_num_tasks(num_tasks)
    if scale_mode not in _aligned_mtl._SCALE_MODES:
        raise ValueError(
            f"scale_mode must be one of {_aligned_mtl._SCALE_MODES}, got {scale_mode!r}"
        )
    pref = None
    if pref_vector is not None:
        pref = jnp.asarray(pref_vector, jnp.float32)
        if pref.ndim != 1:
            raise ValueError(f"pref_vector must be a [K] vector, got shape {pref.shape}")
        if num_tasks is not None and pref.shape != (num_tasks,):
            raise ValueError(f"pref_vector has shape {pref.shape} but num_tasks={num_tasks}")

    return _base.stateless_gram_balancer(
        lambda g, losses, presence=None: _aligned_mtl.aligned_mtl_weights(
            g, pref_vector=pref, scale_mode=scale_mode, presence=presence
        ),
        shared=shared,
        num_tasks=num_tasks,
    )
