"""Multi-gate Mixture-of-Experts (MMoE).

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, https://doi.org/10.1145/3219819.3220007.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models._hps import MultiHeadDense
from mtl_jax.models._stacking import Stacked, check_positive, gate_features, path_mask

__all__ = ["MMoE", "mix_experts"]


def mix_experts(gates: jax.Array, experts: jax.Array) -> jax.Array:
    """Mixes experts per task, ``f_k = Σ_e g_{k,e} h_e``.

    Args:
      gates: ``[K, B, E]`` gate weights.
      experts: ``[E, B, ...]`` expert outputs.

    Returns:
      ``[K, B, ...]``.
    """
    return jnp.einsum("kbe,eb...->kb...", gates, experts)


class MMoE(nn.Module):
    """Shared experts mixed by one softmax gate per task, then one tower per task.

    .. math::

        f_k(x) = \\sum_{e=1}^{E} g_k(x)_e \\, h_e(x), \\qquad
        g_k(x) = \\mathrm{softmax}(W_k\\, s(x)), \\qquad y_k = t_k(f_k(x)),

    where the experts :math:`h_e` are shared by all tasks and the gates
    :math:`W_k` and towers :math:`t_k` are task-specific. The gate input
    :math:`s(x)` is the flattened raw input (the paper) or, with ``gate_stem``,
    a small shared network of the user's choice (for wide inputs such as images).

    ``__call__(x, *, train=False)`` returns the stacked tower outputs ``[K, B, ...]``;
    ``encode(x, *, train=False)`` returns the shared representation (the
    experts' outputs ``[B, E, ...]`` (batch first, so data-parallel sharding
    carries over) and, with a stem, the gate input) and
    ``decode(z, x, *, train=False)`` the tower outputs from it, so
    ``decode(encode(x), x) == __call__(x)`` and representation mode
    (:class:`mtl_jax.training.Representation`) applies.
    ``gates(x, *, train=False)`` returns the gate weights ``[K, B, E]``.
    ``train`` is passed on to the expert, tower and stem modules that declare it
    (see :mod:`mtl_jax.models`); every expert and tower copy draws its own
    dropout masks and keeps its own BatchNorm statistics.

    Attributes:
      expert: any Flax module ``x -> [B, ...]``; ``num_experts`` independently
        initialised copies are made.
      tower: any Flax module; ``num_tasks`` copies, one per task.
      num_tasks: ``K``.
      num_experts: ``E``.
      gate_stem: optional shared Flax module computing the gate input from ``x``.

    References:
      Ma et al., KDD 2018, https://doi.org/10.1145/3219819.3220007.
    """

    expert: nn.Module
    tower: nn.Module
    num_tasks: int
    num_experts: int
    gate_stem: nn.Module | None = None

    def setup(self):
        check_positive(num_tasks=self.num_tasks, num_experts=self.num_experts)
        self.experts = Stacked(self.expert, self.num_experts)
        self.gate = MultiHeadDense(self.num_tasks, self.num_experts)
        self.towers = Stacked(self.tower, self.num_tasks, in_axis=0)

    def encode(self, x: jax.Array, *, train: bool = False) -> dict:
        z = {"experts": jnp.moveaxis(self.experts(x, train=train), 0, 1)}  # batch first
        if self.gate_stem is not None:
            z["gate_input"] = gate_features(x, self.gate_stem, train=train)
        return z

    def _gates(self, z: dict, x: jax.Array) -> jax.Array:
        gate_in = z["gate_input"] if "gate_input" in z else gate_features(x, None)
        return jax.nn.softmax(self.gate(gate_in), axis=-1)

    def decode(self, z: dict, x: jax.Array, *, train: bool = False) -> jax.Array:
        mixed = mix_experts(self._gates(z, x), jnp.moveaxis(z["experts"], 1, 0))
        return self.towers(mixed, train=train)

    def gates(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self._gates(self.encode(x, train=train), x)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.decode(self.encode(x, train=train), x, train=train)

    @staticmethod
    def shared_mask(params) -> dict:
        """A ``shared=`` mask: True on the experts and the gate stem, False elsewhere.

        Args:
          params: the ``"params"`` collection or the whole variables dict.

        Returns:
          A pytree of bools with the structure of ``params``.
        """
        return path_mask(params, lambda p: p[0] in ("experts", "gate_stem"))
