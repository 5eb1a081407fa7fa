"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE).

Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys 2020,
https://doi.org/10.1145/3383313.3412236.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models._hps import MultiHeadDense
from mtl_jax.models._stacking import Stacked, check_positive, gate_features, path_mask

__all__ = ["CGC", "PLE"]


def _flat(x: jax.Array) -> jax.Array:
    return jnp.reshape(x, (x.shape[0], -1))


class PLE(nn.Module):
    """Stacked extraction layers of task-specific and shared experts with gates.

    Extraction layer ``j`` holds ``m`` experts per task and ``s`` shared experts.
    Task ``k``'s path reads its own experts and the shared ones through its gate,
    and the shared path reads every expert through its own shared gate:

    .. math::

        q_k^{j} = \\sum_{e \\in E_k^j \\cup E_s^j} g_k^j(q_k^{j-1})_e \\, h_e,
        \\qquad
        q_s^{j} = \\sum_{e \\in E_1^j \\cup \\dots \\cup E_K^j \\cup E_s^j}
        g_s^j(q_s^{j-1})_e \\, h_e,

    with softmax gates :math:`g(u) = \\mathrm{softmax}(W u)`, task experts
    applied to :math:`q_k^{j-1}` and shared experts to :math:`q_s^{j-1}`. The
    first layer reads the input (gates read ``gate_stem(x)`` when a stem is
    given, the flattened raw input otherwise); the last layer has no shared gate,
    and tower ``k`` maps :math:`q_k^{L}` to task ``k``'s output. One layer is
    :class:`CGC`.

    ``__call__(x, *, train=False)`` returns ``[K, B, ...]``;
    ``encode(x, *, train=False)``/``decode(z, x, *, train=False)`` split at the
    last layer (``z``: the shared experts' outputs of the last layer and,
    for several layers, the task paths entering it); ``gates(x)`` returns the
    last layer's task gates ``[K, B, m + s]``. ``train`` is passed on to the
    expert, tower and stem modules that declare it (see :mod:`mtl_jax.models`);
    every expert and tower copy draws its own dropout masks and keeps its own
    BatchNorm statistics.

    Attributes:
      expert: any Flax module, or one per layer; each layer makes ``K·m + s``
        independent copies.
      tower: any Flax module; one copy per task.
      num_tasks: ``K``.
      num_task_experts: ``m``, experts per task and layer.
      num_shared_experts: ``s``, shared experts per layer.
      num_layers: ``L``, extraction layers.
      gate_stem: optional shared Flax module computing the first layer's gate input.

    References:
      Tang et al., RecSys 2020, https://doi.org/10.1145/3383313.3412236.
    """

    expert: nn.Module | Sequence[nn.Module]
    tower: nn.Module
    num_tasks: int
    num_task_experts: int = 1
    num_shared_experts: int = 1
    num_layers: int = 2
    gate_stem: nn.Module | None = None

    def _expert(self, j: int) -> nn.Module:
        if isinstance(self.expert, nn.Module):
            return self.expert
        if len(self.expert) != self.num_layers:
            raise ValueError(
                f"expert has {len(self.expert)} modules for num_layers={self.num_layers}"
            )
        return self.expert[j]

    def setup(self):
        check_positive(
            num_tasks=self.num_tasks,
            num_task_experts=self.num_task_experts,
            num_shared_experts=self.num_shared_experts,
            num_layers=self.num_layers,
        )
        kt, m, s = self.num_tasks, self.num_task_experts, self.num_shared_experts
        task_experts, shared_experts, task_gates, shared_gates = [], [], [], []
        for j in range(self.num_layers):
            first = j == 0
            e = self._expert(j)
            task_experts.append(Stacked(Stacked(e, m), kt, in_axis=None if first else 0))
            shared_experts.append(Stacked(e, s))
            if first:
                task_gates.append(MultiHeadDense(kt, m + s))
            else:
                task_gates.append(Stacked(nn.Dense(m + s), kt, in_axis=0))
            if j < self.num_layers - 1:
                shared_gates.append(nn.Dense(kt * m + s))
        self.task_experts = task_experts
        self.shared_experts = shared_experts
        self.task_gates = task_gates
        self.shared_gates = shared_gates
        self.towers = Stacked(self.tower, kt, in_axis=0)

    def _layer(self, j: int, q_tasks, q_shared, gate_tasks, gate_shared, shared_out=None, *, train):
        """One extraction layer -> (task paths ``[K, B, ...]``, shared path or None)."""
        kt = self.num_tasks
        h_tasks = self.task_experts[j](q_tasks, train=train)  # [K, m, B, ...]
        if shared_out is None:
            h_shared = self.shared_experts[j](q_shared, train=train)
        else:
            h_shared = shared_out
        g = jax.nn.softmax(self.task_gates[j](gate_tasks), axis=-1)  # [K, B, m + s]
        own = jnp.concatenate(
            [h_tasks, jnp.broadcast_to(h_shared[None], (kt, *h_shared.shape))], axis=1
        )  # [K, m + s, B, ...]
        out_tasks = jnp.einsum("kbe,keb...->kb...", g, own)
        if j == self.num_layers - 1:
            return out_tasks, None
        every = jnp.concatenate([jnp.reshape(h_tasks, (-1, *h_tasks.shape[2:])), h_shared])
        gs = jax.nn.softmax(self.shared_gates[j](gate_shared), axis=-1)  # [B, K m + s]
        return out_tasks, jnp.einsum("be,eb...->b...", gs, every)

    def encode(self, x: jax.Array, *, train: bool = False) -> dict:
        last = self.num_layers - 1
        if last == 0:
            z = {"shared_experts": jnp.moveaxis(self.shared_experts[0](x, train=train), 0, 1)}
            if self.gate_stem is not None:
                z["gate_input"] = gate_features(x, self.gate_stem, train=train)
            return z
        gin = gate_features(x, self.gate_stem, train=train)
        q_tasks, q_shared = self._layer(0, x, x, gin, gin, train=train)
        for j in range(1, last):
            q_tasks, q_shared = self._layer(
                j, q_tasks, q_shared, jax.vmap(_flat)(q_tasks), _flat(q_shared), train=train
            )
        # Batch first in z, so a data-sharded representation stays sharded on axis 0.
        shared_out = self.shared_experts[last](q_shared, train=train)
        return {
            "task_inputs": jnp.moveaxis(q_tasks, 0, 1),
            "shared_experts": jnp.moveaxis(shared_out, 0, 1),
        }

    def _last(self, z: dict, x: jax.Array):
        last = self.num_layers - 1
        if last == 0:
            gin = z["gate_input"] if "gate_input" in z else gate_features(x, None)
            return last, x, gin
        q_tasks = jnp.moveaxis(z["task_inputs"], 1, 0)
        return last, q_tasks, jax.vmap(_flat)(q_tasks)

    def decode(self, z: dict, x: jax.Array, *, train: bool = False) -> jax.Array:
        last, q_tasks, gin = self._last(z, x)
        shared_out = jnp.moveaxis(z["shared_experts"], 1, 0)
        out, _ = self._layer(last, q_tasks, None, gin, None, shared_out=shared_out, train=train)
        return self.towers(out, train=train)

    def gates(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        _, _, gin = self._last(self.encode(x, train=train), x)
        return jax.nn.softmax(self.task_gates[self.num_layers - 1](gin), axis=-1)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.decode(self.encode(x, train=train), x, train=train)

    def shared_mask(self, params) -> dict:
        """A ``shared=`` mask: True on every leaf that more than one task's output reads.

        Shared: the gate stem, all shared experts and shared gates, the task
        experts of every layer but the last (they feed the shared gate) and the
        task gates of layers ``0..L-3``. Task-specific: the last layer's task
        experts, the task gates of the last two layers and the towers.

        Args:
          params: the ``"params"`` collection or the whole variables dict.

        Returns:
          A pytree of bools with the structure of ``params``.
        """
        last = self.num_layers - 1

        def shared(path):
            name = path[0]
            if name in ("gate_stem",) or name.startswith(("shared_experts", "shared_gates")):
                return True
            if name.startswith("task_experts_"):
                return int(name.rsplit("_", 1)[1]) < last
            if name.startswith("task_gates_"):
                return int(name.rsplit("_", 1)[1]) < last - 1
            return False

        return path_mask(params, shared)


class CGC(PLE):
    """Customized Gate Control: one :class:`PLE` extraction layer.

    .. math::

        y_k = t_k\\Big(\\sum_{e \\in E_k \\cup E_s} g_k(x)_e \\, h_e(x)\\Big),
        \\qquad g_k(x) = \\mathrm{softmax}(W_k\\, s(x)),

    task ``k``'s gate mixing its own ``m`` experts and the ``s`` shared ones; the
    gate input :math:`s(x)` is the flattened raw input or ``gate_stem(x)``.
    Representation mode splits after the shared experts (and the stem).

    Attributes:
      expert: any Flax module; ``K·m + s`` independent copies.
      tower: any Flax module; one copy per task.
      num_tasks: ``K``.
      num_task_experts: ``m``.
      num_shared_experts: ``s``.
      num_layers: must be 1.
      gate_stem: optional shared Flax module computing the gate input.

    References:
      Tang et al., RecSys 2020, https://doi.org/10.1145/3383313.3412236.
    """

    num_layers: int = 1

    def setup(self):
        if self.num_layers != 1:
            raise ValueError(f"CGC has one layer (num_layers=1), got {self.num_layers}; use PLE")
        super().setup()
