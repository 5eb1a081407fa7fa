"""Cross-stitch networks: one network per task, activations mixed between stages.

Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016,
https://arxiv.org/abs/1604.03539.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models._stacking import Stacked, check_positive, path_mask

__all__ = ["CrossStitch"]


class CrossStitch(nn.Module):
    """``K`` copies of a staged network whose activations are mixed after each stage.

    After stage ``j`` (all but the last) a cross-stitch unit replaces each task's
    activation by a learned linear combination of all tasks' activations:

    .. math::

        \\tilde x_k^{j} = \\sum_{l=1}^{K} \\alpha^{j}_{kl} \\, x_l^{j},

    with one :math:`K \\times K` matrix :math:`\\alpha^j` per unit (the paper's
    Eq. 1), or one per channel of the activation with ``per_channel=True``.
    ``unit_init="identity"`` (default, the paper's): :math:`\\alpha_{kk} =`
    ``alpha_self`` and the rest of each row shared equally by the other tasks
    (``(0.9, 0.1)`` for two tasks, as in the paper's experiments); ``"ones"``: every
    entry 1.
    The last stage of each task is its head. The paper also scales the units'
    learning rate up; use :func:`optax.multi_transform` for that. There is no
    shared representation, so no ``encode``/``decode``.

    Attributes:
      stages: Flax modules applied in order; each is copied once per task.
      num_tasks: ``K``.
      unit_init: ``"identity"`` or ``"ones"``.
      alpha_self: diagonal value of the ``"identity"`` initialisation, in ``(0, 1]``.
      per_channel: one unit per channel (last axis) instead of one per stage.

    ``__call__(x, *, train=False)`` returns the last stages' outputs
    ``[K, B, ...]``; ``train`` is passed on to the stages that declare it (each
    task's copy draws its own dropout masks and keeps its own BatchNorm
    statistics).

    References:
      Misra et al., CVPR 2016, https://arxiv.org/abs/1604.03539.
    """

    stages: Sequence[nn.Module]
    num_tasks: int
    unit_init: Literal["identity", "ones"] = "identity"
    alpha_self: float = 0.9
    per_channel: bool = False

    def _alpha_init(self, key, shape):
        del key
        kt = self.num_tasks
        if self.unit_init == "ones":
            return jnp.ones(shape, jnp.float32)
        off = (1.0 - self.alpha_self) / (kt - 1) if kt > 1 else 0.0
        eye = jnp.eye(kt, dtype=jnp.float32)
        a = self.alpha_self * eye + off * (1.0 - eye)
        return jnp.broadcast_to(jnp.reshape(a, (kt, kt) + (1,) * (len(shape) - 2)), shape)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        check_positive(num_tasks=self.num_tasks)
        if not self.stages:
            raise ValueError("stages must hold at least one module")
        if self.unit_init not in ("identity", "ones"):
            raise ValueError(f"unit_init must be 'identity' or 'ones', got {self.unit_init!r}")
        if not 0.0 < self.alpha_self <= 1.0:
            raise ValueError(f"alpha_self must be in (0, 1], got {self.alpha_self}")
        kt = self.num_tasks
        h = x
        for j, stage in enumerate(self.stages):
            h = Stacked(stage, kt, in_axis=None if j == 0 else 0, name=f"stage_{j}")(h, train=train)
            if j == len(self.stages) - 1:
                break
            shape = (kt, kt, h.shape[-1]) if self.per_channel else (kt, kt)
            alpha = self.param(f"unit_{j}", self._alpha_init, shape)
            if self.per_channel:
                h = jnp.einsum("klc,lb...c->kb...c", alpha, h)
            else:
                h = jnp.einsum("kl,lb...->kb...", alpha, h)
        return h

    def shared_mask(self, params) -> dict:
        """A ``shared=`` mask: True on every stage but the last and every unit but the last.

        Entry ``(k, l)`` of the last unit only feeds task ``k``'s last stage, so
        that unit is task-specific, like the last stages.

        Args:
          params: the ``"params"`` collection or the whole variables dict.

        Returns:
          A pytree of bools with the structure of ``params``.
        """
        n = len(self.stages)
        private = {f"stage_{n - 1}", f"unit_{n - 2}"}
        return path_mask(params, lambda p: p[0] not in private)
