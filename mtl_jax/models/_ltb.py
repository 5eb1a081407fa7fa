"""Learning to Branch: a tree of layers whose branching is learned by Gumbel-softmax.

Guo, Lee and Ulbricht, "Learning to Branch for Multi-Task Learning", ICML 2020,
https://arxiv.org/abs/2002.05882.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mtl_jax.models._stacking import Stacked, check_positive, path_mask

__all__ = ["LTB"]


class LTB(nn.Module):
    """Layers of parallel nodes; each child learns which parent node to read.

    Layer ``0`` has ``N_0`` nodes reading the input; node ``i`` of layer
    ``j ≥ 1`` reads a combination of layer ``j-1``'s nodes,

    .. math::

        u_i^{j} = \\sum_{p} s^{j}_{ip} \\, h_p^{j-1}, \\qquad
        s^{j}_{i} = \\mathrm{softmax}\\big((\\theta^{j}_{i} + G)/\\tau\\big)
        \\text{ in training}, \\quad
        s^{j}_{i} = \\mathrm{onehot}(\\arg\\max_p \\theta^{j}_{ip})
        \\text{ at evaluation},

    with Gumbel noise :math:`G` and temperature :math:`\\tau`. The last layer has
    ``K`` nodes, one per task, followed by task ``k``'s head; the branching
    logits :math:`\\theta` start at zero (every parent equally likely). Sampling
    happens only with ``train=True`` (it needs a ``"gumbel"`` PRNG stream); at
    evaluation the tree is the argmax one, deterministic. The temperature is an
    argument of every call: compute it from the step with
    :meth:`temperature_schedule` (or any schedule).

    Attributes:
      layers: one Flax module per layer; each layer makes one copy per node.
      head: any Flax module; one copy per task.
      num_tasks: ``K``.
      widths: nodes per layer for all layers but the last (default ``K`` each);
        the last layer has ``K`` nodes.

    ``__call__(x, *, temperature=1.0, train=False)`` returns ``[K, B, ...]``;
    ``parents()`` the argmax parent of every node of layers ``1..L-1``.

    References:
      Guo et al., ICML 2020, https://arxiv.org/abs/2002.05882.
    """

    layers: Sequence[nn.Module]
    head: nn.Module
    num_tasks: int
    widths: Sequence[int] | None = None

    def _widths(self) -> list[int]:
        check_positive(num_tasks=self.num_tasks)
        if not self.layers:
            raise ValueError("layers must hold at least one module")
        inner = (
            [self.num_tasks] * (len(self.layers) - 1) if self.widths is None else list(self.widths)
        )
        if len(inner) != len(self.layers) - 1:
            raise ValueError(
                f"widths needs {len(self.layers) - 1} entries (all layers but the last), "
                f"got {self.widths}"
            )
        for w in inner:
            check_positive(widths=w)
        return [*inner, self.num_tasks]

    def setup(self):
        widths = self._widths()
        self.nodes = [
            Stacked(layer, w, in_axis=None if j == 0 else 0)
            for j, (layer, w) in enumerate(zip(self.layers, widths))
        ]
        self.branch_logits = [
            self.param(f"theta_{j}", nn.initializers.zeros, (widths[j], widths[j - 1]))
            for j in range(1, len(widths))
        ]
        self.heads = Stacked(self.head, self.num_tasks, in_axis=0)

    def parents(self) -> list[jax.Array]:
        return [jnp.argmax(t, axis=-1) for t in self.branch_logits]

    def __call__(
        self, x: jax.Array, *, temperature: float | jax.Array = 1.0, train: bool = False
    ) -> jax.Array:
        h = self.nodes[0](x)
        for j, theta in enumerate(self.branch_logits, start=1):
            if train:
                g = jax.random.gumbel(self.make_rng("gumbel"), theta.shape, theta.dtype)
                s = jax.nn.softmax((theta + g) / temperature, axis=-1)
            else:
                s = jax.nn.one_hot(jnp.argmax(theta, axis=-1), theta.shape[-1], dtype=h.dtype)
            h = self.nodes[j](jnp.einsum("ip,pb...->ib...", s, h))
        return self.heads(h)

    @staticmethod
    def temperature_schedule(
        *, initial: float = 5.0, final: float = 0.1, decay_rate: float = 0.5, decay_steps: int
    ) -> Callable[[jax.Array], jax.Array]:
        """Exponentially annealed Gumbel-softmax temperature, ``step -> τ``.

        .. math::

            \\tau(t) = \\max(\\tau_{final}, \\tau_0 \\, r^{t / T}).

        Args:
          initial: :math:`\\tau_0 > 0`.
          final: floor :math:`\\tau_{final} > 0`.
          decay_rate: :math:`r \\in (0, 1]`.
          decay_steps: :math:`T > 0` steps per factor ``r``.

        Returns:
          A schedule ``step -> temperature`` (an optax schedule).
        """
        if not initial > 0 or not final > 0:
            raise ValueError(f"initial and final must be > 0, got {initial}, {final}")
        if not 0 < decay_rate <= 1:
            raise ValueError(f"decay_rate must be in (0, 1], got {decay_rate}")
        check_positive(decay_steps=decay_steps)
        return optax.exponential_decay(
            initial, decay_steps, decay_rate, end_value=min(final, initial)
        )

    def shared_mask(self, params) -> dict:
        """A ``shared=`` mask: False on the last layer's nodes and logits and the heads.

        Args:
          params: the ``"params"`` collection or the whole variables dict.

        Returns:
          A pytree of bools with the structure of ``params``.
        """
        last = len(self.layers) - 1
        private = {f"nodes_{last}", f"theta_{last}", "heads"}
        return path_mask(params, lambda p: p[0] not in private)
