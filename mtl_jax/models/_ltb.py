"""Learning to Branch: a tree of layers whose branching is learned by Gumbel-softmax.

Guo, Lee and Ulbricht, "Learning to Branch for Multi-Task Learning", ICML 2020,
https://arxiv.org/abs/2006.01895.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    :meth:`temperature_schedule` (or any schedule). ``train`` is also passed on
    to the layer and head modules that declare it (see :mod:`mtl_jax.models`);
    every node and head copy draws its own dropout masks and keeps its own
    BatchNorm statistics.

    Attributes:
      layers: one Flax module per layer; each layer makes one copy per node.
      head: any Flax module; one copy per task.
      num_tasks: ``K``.
      widths: nodes per layer for all layers but the last (default ``K`` each);
        the last layer has ``K`` nodes.

    ``__call__(x, *, temperature=1.0, train=False)`` returns ``[K, B, ...]``;
    ``parents()`` the argmax parent of every node of layers ``1..L-1``. The
    branch weights :math:`s^j` used by a call are sown as
    ``intermediates["branch_weights_{j}"]`` (``mutable=["intermediates"]``).

    References:
      Guo et al., ICML 2020, https://arxiv.org/abs/2006.01895.
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
        """The ``K`` task outputs ``[K, B, ...]``.

        Args:
          x: the input batch.
          temperature: Gumbel-softmax temperature ``τ > 0`` (used with
            ``train=True``). A Python or concrete value is checked; a traced one
            (inside ``jit``) cannot be and must be kept positive by the caller.
          train: sample the tree (needs the ``"gumbel"`` PRNG stream) and run the
            layers in training mode; otherwise the argmax tree, deterministic.

        Returns:
          ``[K, B, ...]``.
        """
        if train:
            try:
                t = float(temperature)
            except (TypeError, jax.errors.ConcretizationTypeError):
                t = None  # traced: cannot be checked here
            if t is not None and not t > 0:
                raise ValueError(f"temperature must be > 0 with train=True, got {temperature}")
        h = self.nodes[0](x, train=train)
        for j, theta in enumerate(self.branch_logits, start=1):
            if train:
                g = jax.random.gumbel(self.make_rng("gumbel"), theta.shape, theta.dtype)
                s = jax.nn.softmax((theta + g) / temperature, axis=-1)
            else:
                s = jax.nn.one_hot(jnp.argmax(theta, axis=-1), theta.shape[-1], dtype=h.dtype)
            self.sow("intermediates", f"branch_weights_{j}", s)
            h = self.nodes[j](jnp.einsum("ip,pb...->ib...", s, h), train=train)
        return self.heads(h, train=train)

    @staticmethod
    def temperature_schedule(
        *, initial: float = 5.0, final: float = 0.1, decay_rate: float = 0.5, decay_steps: int
    ) -> Callable[[jax.Array], jax.Array]:
        """Exponentially annealed Gumbel-softmax temperature, ``step -> τ``.

        .. math::

            \\tau(t) = \\max(\\tau_{final}, \\tau_0 \\, r^{t / T}).

        ``decay_rate=1`` keeps ``τ = max(τ_final, τ_0)`` constant, and a floor
        above the start (``final > initial``) gives ``τ_final`` at every step.

        Args:
          initial: :math:`\\tau_0 > 0`, finite.
          final: floor :math:`\\tau_{final} > 0`, finite.
          decay_rate: :math:`r \\in (0, 1]`.
          decay_steps: :math:`T`, a positive int: steps per factor ``r``.

        Returns:
          A schedule ``step -> temperature`` (float32, jit-compatible).

        Raises:
          ValueError: naming the argument and value, if any is out of range.
        """
        for name, v in (("initial", initial), ("final", final)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < np.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if isinstance(decay_rate, bool) or not isinstance(decay_rate, (int, float)):
            raise ValueError(f"decay_rate must be a number in (0, 1], got {decay_rate!r}")
        if not 0 < decay_rate <= 1:
            raise ValueError(f"decay_rate must be in (0, 1], got {decay_rate!r}")
        check_positive(decay_steps=decay_steps)
        log_r = float(np.log(decay_rate))

        def schedule(step):
            t = jnp.asarray(step, jnp.float32) / decay_steps
            return jnp.maximum(final, initial * jnp.exp(log_r * t)).astype(jnp.float32)

        return schedule

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
