"""DSelect-k: differentiable selection of k experts for multi-task learning.

Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts
with Applications to Multi-Task Learning", NeurIPS 2021,
https://arxiv.org/abs/2106.03760.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models._hps import MultiHeadDense
from mtl_jax.models._mmoe import mix_experts
from mtl_jax.models._stacking import Stacked, check_positive, gate_features, path_mask

__all__ = ["DSelectK", "smooth_step"]


def smooth_step(t: jax.Array, gamma: float) -> jax.Array:
    """The cubic smooth-step: 0 below ``-γ/2``, 1 above ``γ/2``, ``C¹`` in between."""
    cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
    return jnp.where(t <= -gamma / 2, 0.0, jnp.where(t >= gamma / 2, 1.0, cubic))


class DSelectK(nn.Module):
    """Shared experts; each task's gate is a differentiable choice of ``k`` of them.

    With ``E = 2^m`` experts, single-expert selector ``i`` of task ``t`` has
    ``m`` logits :math:`z^{(t,i)}` and puts weight

    .. math::

        r(z)_l = \\prod_{j=1}^{m} S(z_j)^{b_{lj}} \\, (1 - S(z_j))^{1 - b_{lj}}

    on expert ``l`` (``b_l`` its binary code, ``S`` the smooth-step with width
    ``γ``, :func:`smooth_step`). Task ``t`` mixes its ``k`` selectors with
    :math:`\\mathrm{softmax}(\\alpha^{(t)})` and its tower reads
    :math:`f_t = \\sum_l q^{(t)}_l h_l(x)`, with
    :math:`q^{(t)} = \\sum_i \\mathrm{softmax}(\\alpha^{(t)})_i \\, r(z^{(t,i)})`.
    Once every :math:`|z_j| \\ge γ/2` each selector is one-hot, so at most ``k``
    experts are used; before, the gradient flows through ``S``. With
    ``per_example`` (default) ``z`` and ``α`` are affine in the gate input (the
    paper's per-example gating); otherwise they are free parameters (static
    gating).

    The paper's entropy regulariser
    :math:`\\lambda \\sum_t \\sum_i H(r(z^{(t,i)}))`, which pushes every selector
    of every task towards a single expert, is returned by
    ``apply(..., method="selector_entropy")`` as a ``[K]`` vector; add
    ``λ(step)`` times its sum to the loss (the weight, and any schedule for it,
    stays in the caller's hands). ``encode``/``decode``/``gates`` and the
    ``train`` keyword are as in :class:`MMoE`.

    Attributes:
      expert: any Flax module ``x -> [B, ...]``; ``num_experts`` copies.
      tower: any Flax module; one copy per task.
      num_tasks: ``K``.
      num_experts: ``E``, a power of two.
      k: selectors per task (experts each task may use).
      gamma: width ``γ`` of the smooth-step, used in the forward pass and in the
        initialisation of the selector logits (biases uniform in
        ``[-γ/100, γ/100]``, so every selector starts far from saturation).
      per_example: per-example (True) or static (False) gating.
      gate_stem: optional shared Flax module computing the gate input.

    References:
      Hazimeh et al., NeurIPS 2021, https://arxiv.org/abs/2106.03760.
    """

    expert: nn.Module
    tower: nn.Module
    num_tasks: int
    num_experts: int
    k: int = 2
    gamma: float = 1.0
    per_example: bool = True
    gate_stem: nn.Module | None = None

    def setup(self):
        check_positive(num_tasks=self.num_tasks, num_experts=self.num_experts, k=self.k)
        if self.k > self.num_experts:
            raise ValueError(
                f"k must be at most num_experts={self.num_experts} (each selector picks one "
                f"expert), got k={self.k}"
            )
        if self.num_experts < 2 or self.num_experts & (self.num_experts - 1):
            raise ValueError(f"num_experts must be a power of two >= 2, got {self.num_experts}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        m = int(math.log2(self.num_experts))
        self.codes = jnp.asarray(
            (np.arange(self.num_experts)[:, None] >> np.arange(m)[None, :]) & 1, jnp.bool_
        )  # [E, m]
        self.experts = Stacked(self.expert, self.num_experts)
        self.towers = Stacked(self.tower, self.num_tasks, in_axis=0)
        r = self.gamma / 100
        z_init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -r, r)
        shape_z, shape_a = (self.num_tasks, self.k, m), (self.num_tasks, self.k)
        if self.per_example:
            small = nn.initializers.variance_scaling(1e-2, "fan_in", "uniform")
            self.z_gate = MultiHeadDense(
                self.num_tasks, self.k * m, kernel_init=small, bias_init=z_init
            )
            self.alpha_gate = MultiHeadDense(self.num_tasks, self.k, kernel_init=small)
        else:
            self.z = self.param("z", z_init, shape_z)
            self.alpha = self.param("alpha", nn.initializers.zeros, shape_a)

    def _selectors(self, gate_in: jax.Array):
        """Selector logits ``z [K, B, k, m]`` and mixing logits ``α [K, B, k]``."""
        kt, k, m = self.num_tasks, self.k, self.codes.shape[1]
        b = gate_in.shape[0]
        if not self.per_example:
            z = jnp.broadcast_to(self.z[:, None], (kt, b, k, m))
            return z, jnp.broadcast_to(self.alpha[:, None], (kt, b, k))
        z = jnp.reshape(self.z_gate(gate_in), (kt, b, k, m))
        return z, self.alpha_gate(gate_in)

    def _single(self, z: jax.Array) -> jax.Array:
        """``r(z)``: ``[..., m]`` logits -> ``[..., E]`` weights on the experts."""
        s = smooth_step(z, self.gamma)[..., None, :]  # [..., 1, m]
        return jnp.prod(jnp.where(self.codes, s, 1.0 - s), axis=-1)

    def _gate_in(self, z: dict, x: jax.Array) -> jax.Array:
        return z["gate_input"] if "gate_input" in z else gate_features(x, None)

    def _gates_from(self, z: dict, x: jax.Array) -> jax.Array:
        logits, alpha = self._selectors(self._gate_in(z, x))
        r = self._single(logits)  # [K, B, k, E]
        return jnp.einsum("tbi,tbie->tbe", jax.nn.softmax(alpha, axis=-1), r)

    def encode(self, x: jax.Array, *, train: bool = False) -> dict:
        z = {"experts": jnp.moveaxis(self.experts(x, train=train), 0, 1)}  # batch first
        if self.gate_stem is not None:
            z["gate_input"] = gate_features(x, self.gate_stem, train=train)
        return z

    def decode(self, z: dict, x: jax.Array, *, train: bool = False) -> jax.Array:
        mixed = mix_experts(self._gates_from(z, x), jnp.moveaxis(z["experts"], 1, 0))
        return self.towers(mixed, train=train)

    def gates(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self._gates_from(self.encode(x, train=train), x)

    def selector_entropy(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """``[K]``: for each task, ``Σ_i H(r(z^{(t,i)}))`` averaged over the batch."""
        gate_in = self._gate_in(self.encode(x, train=train), x)
        logits, _ = self._selectors(gate_in)
        r = self._single(logits)
        # -r log r with 0 log 0 = 0 and a zero (not NaN) gradient where a selector has
        # saturated (the smooth-step makes r exactly 0 there; xlogy's gradient is NaN).
        pos = r > 0
        h = -jnp.sum(jnp.where(pos, r * jnp.log(jnp.where(pos, r, 1.0)), 0.0), axis=-1)
        return jnp.mean(jnp.sum(h, axis=-1), axis=-1)

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
