"""Multi-Task Attention Network (MTAN): task attention over a shared network.

Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019, https://arxiv.org/abs/1803.10704.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models._stacking import Stacked, check_positive, path_mask

__all__ = ["MTAN"]


def _split(out):
    """A stage returns ``p`` or ``(u, p)``: attention input ``u`` and output ``p``."""
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"an MTAN stage returns p or (u, p), got a {len(out)}-tuple")
        return {"u": out[0], "p": out[1]}
    return {"p": out}


class _Attention(nn.Module):
    """One task's attention module at one stage: ``â = σ(g([u; f(â_prev)])) ⊙ p``."""

    hidden: int | None

    @nn.compact
    def __call__(self, u, p, prev=None):
        h = u
        if prev is not None:
            prev = nn.relu(nn.Dense(u.shape[-1], name="f")(prev))
            if prev.shape[1:-1] != u.shape[1:-1]:
                ratio = tuple(a // b for a, b in zip(prev.shape[1:-1], u.shape[1:-1]))
                if any(r < 1 for r in ratio) or any(
                    b * r != a for a, b, r in zip(prev.shape[1:-1], u.shape[1:-1], ratio)
                ):
                    raise ValueError(
                        f"MTAN cannot pool spatial shape {prev.shape[1:-1]} to {u.shape[1:-1]}"
                    )
                prev = nn.avg_pool(prev, ratio, strides=ratio)
            h = jnp.concatenate([u, prev], axis=-1)
        h = nn.relu(nn.Dense(self.hidden or u.shape[-1], name="g_0")(h))
        mask = nn.sigmoid(nn.Dense(p.shape[-1], name="g_1")(h))
        if mask.shape != p.shape:
            raise ValueError(
                f"MTAN: a stage's u {u.shape} and p {p.shape} must share their spatial shape"
            )
        return mask * p


class MTAN(nn.Module):
    """A shared network of stages with one soft-attention path per task.

    At stage ``j`` the shared network produces an attention input :math:`u^j` and
    an output :math:`p^j`; task ``k`` keeps the attended features

    .. math::

        \\hat a_k^{j} = \\sigma\\big(g_k^{j}([u^{j};\\, f_k^{j}(\\hat a_k^{j-1})])\\big)
        \\odot p^{j},

    (only :math:`u^1` at the first stage), where :math:`g_k^j` is two 1×1
    layers (ReLU, then sigmoid) and :math:`f_k^j` a 1×1 layer with ReLU followed by
    average pooling to :math:`u^j`'s resolution; task ``k``'s head reads
    :math:`\\hat a_k^{L}`. A stage may return ``(u, p)`` (e.g. the output of its
    first layer and of its last, as in the paper) or just ``p`` (then ``u = p``);
    ``u`` and ``p`` share their spatial shape (pool at the start of the next
    stage, as the paper's :math:`f` does). Features are channels-last, ``[B, d]``
    or ``[B, H, W, C]``.

    ``__call__(x)`` returns ``[K, B, ...]``; ``encode(x)`` returns every stage's
    ``u``/``p`` (the shared representation) and ``decode(z)`` the heads' outputs.

    Attributes:
      stages: shared Flax modules applied in order.
      head: any Flax module; one copy per task.
      num_tasks: ``K``.
      attention_features: hidden width of :math:`g` (default: ``u``'s channels).

    References:
      Liu et al., CVPR 2019, https://arxiv.org/abs/1803.10704.
    """

    stages: Sequence[nn.Module]
    head: nn.Module
    num_tasks: int
    attention_features: int | None = None

    def setup(self):
        check_positive(num_tasks=self.num_tasks)
        if not self.stages:
            raise ValueError("stages must hold at least one module")
        kt = self.num_tasks
        self.attention = [
            Stacked(
                _Attention(self.attention_features),
                kt,
                in_axis=(None, None) if j == 0 else (None, None, 0),
            )
            for j in range(len(self.stages))
        ]
        self.heads = Stacked(self.head, kt, in_axis=0)

    def encode(self, x: jax.Array) -> list[dict]:
        z, h = [], x
        for stage in self.stages:
            out = _split(stage(h))
            z.append(out)
            h = out["p"]
        return z

    def decode(self, z: list[dict]) -> jax.Array:
        a = None
        for j, out in enumerate(z):
            u = out.get("u", out["p"])
            args = (u, out["p"]) if a is None else (u, out["p"], a)
            a = self.attention[j](*args)
        return self.heads(a)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))

    @staticmethod
    def shared_mask(params) -> dict:
        """A ``shared=`` mask: True on the shared stages, False on attention and heads.

        Args:
          params: the ``"params"`` collection or the whole variables dict.

        Returns:
          A pytree of bools with the structure of ``params``.
        """
        return path_mask(params, lambda p: p[0].startswith("stages"))
