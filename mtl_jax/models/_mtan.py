"""Multi-Task Attention Network (MTAN): task attention over a shared network.

Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019, https://arxiv.org/abs/1803.10704.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models._stacking import Stacked, call, check_positive, path_mask

__all__ = ["MTAN"]


def _split(out):
    """A stage returns ``p`` or ``(u, p)``: attention input ``u`` and output ``p``."""
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"an MTAN stage returns p or (u, p), got a {len(out)}-tuple")
        return {"u": out[0], "p": out[1]}
    return {"p": out}


def _norm(h, *, on: bool, train: bool, momentum: float, name: str):
    if not on:
        return h
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, name=name)(h)


class _Extractor(nn.Module):
    """The paper's shared feature extractor ``f``: 3×3 conv, BatchNorm, ReLU.

    On ``[B, H, W, C]`` (any number of spatial axes) a ``3 × … × 3`` convolution
    with "same" padding; on ``[B, d]`` features a dense layer. The output width is
    the next stage's ``u`` channels, given at call time.
    """

    batch_norm: bool = True
    momentum: float = 0.9

    @nn.compact
    def __call__(self, x, *, features: int, train: bool = False):
        if x.ndim > 2:
            h = nn.Conv(features, (3,) * (x.ndim - 2), padding="SAME", name="conv")(x)
        else:
            h = nn.Dense(features, name="conv")(x)
        h = _norm(h, on=self.batch_norm, train=train, momentum=self.momentum, name="bn")
        return nn.relu(h)


class _Attention(nn.Module):
    """One task's attention module ``g`` at one stage, applied: ``σ(g(v)) ⊙ p``.

    ``g`` is the paper's two 1×1 convolutions (dense layers on the channel axis),
    each followed by BatchNorm, with a ReLU between them and a sigmoid at the end.
    """

    hidden: int | None
    batch_norm: bool = True
    momentum: float = 0.9

    @nn.compact
    def __call__(self, u, p, prev=None, train: bool = False):
        if u.shape[:-1] != p.shape[:-1]:
            raise ValueError(
                f"MTAN: a stage's u {u.shape} and p {p.shape} must share their spatial shape"
            )
        v = u if prev is None else jnp.concatenate([u, prev], axis=-1)
        h = nn.Dense(self.hidden or u.shape[-1], name="g_0")(v)
        bn = {"on": self.batch_norm, "train": train, "momentum": self.momentum}
        h = nn.relu(_norm(h, name="bn_0", **bn))
        h = nn.Dense(p.shape[-1], name="g_1")(h)
        return nn.sigmoid(_norm(h, name="bn_1", **bn)) * p


class MTAN(nn.Module):
    """A shared network of stages with one soft-attention path per task.

    At stage ``j`` the shared network produces an attention input :math:`u^j` and
    an output :math:`p^j`; task ``k`` keeps the attended features

    .. math::

        \\hat a_k^{1} = \\sigma\\big(g_k^{1}(u^{1})\\big) \\odot p^{1}, \\qquad
        \\hat a_k^{j} = \\sigma\\big(g_k^{j}([u^{j};\\,
            \\mathrm{pool}(f^{j}(\\hat a_k^{j-1}))])\\big) \\odot p^{j},

    where the attention module :math:`g_k^j` (task-specific) is two 1×1 layers,
    each followed by BatchNorm, with a ReLU between them, and the feature
    extractor :math:`f^j` is **shared by all tasks**: by default the paper's 3×3
    convolution with BatchNorm and ReLU (a dense layer on ``[B, d]`` features),
    mapping to :math:`u^j`'s channels, followed by max-pooling to :math:`u^j`'s
    resolution. Task ``k``'s head reads :math:`\\hat a_k^{L}`. A stage may return
    ``(u, p)`` (the output of its first layer and of its last, as in the paper)
    or just ``p`` (then ``u = p``); ``u`` and ``p`` share their spatial shape
    (pool at the start of the next stage, as the paper's encoder does). Features
    are channels-last, ``[B, d]`` or ``[B, H, W, C]``.

    ``__call__(x, *, train=False)`` returns ``[K, B, ...]``;
    ``encode(x, *, train=False)`` returns every stage's ``u``/``p`` (the shared
    representation) and ``decode(z, *, train=False)`` the heads' outputs.
    ``train`` drives the BatchNorm layers of ``f`` and ``g`` (batch statistics,
    updated with ``mutable=["batch_stats"]``, in training; running ones at
    evaluation) and is passed on to the stages, extractors and head that
    declare it (see :mod:`mtl_jax.models`).

    Deviations from the paper: only the encoder half of the paper's SegNet-MTAN
    is built (the user's ``head`` plays the decoder, whose attention modules
    mirror the encoder's); and the shared ``f`` is applied once to all tasks'
    attended features stacked along the batch axis, so in training its
    BatchNorm statistics are pooled over the tasks (the authors' code calls it
    once per task). At evaluation the two are identical.

    Attributes:
      stages: shared Flax modules applied in order.
      head: any Flax module; one copy per task.
      num_tasks: ``K``.
      attention_features: hidden width of :math:`g` (default: ``u``'s channels,
        as in the paper); a positive int or ``None``.
      extractor: the shared :math:`f` between stages: ``None`` (the paper's
        form), one Flax module (independently initialised for each of the
        ``L - 1`` transitions) or a sequence of ``L - 1`` modules. Its output is
        max-pooled to the next stage's resolution and concatenated with ``u``.
      batch_norm: BatchNorm in :math:`g` and in the default :math:`f` (the
        paper's form); ``False`` drops it (no ``"batch_stats"`` collection).
      batch_norm_momentum: decay :math:`m` of those BatchNorm layers' running
        statistics, :math:`r \\leftarrow m\\,r + (1 - m)\\,\\bar x_{\\text{batch}}`,
        in ``[0, 1)`` (0: the last batch's statistics). The default 0.9 is
        PyTorch's ``BatchNorm2d`` default (``momentum=0.1`` there weighs the new
        batch), which the authors' code uses; Flax's own default 0.99 averages
        over ~100 steps and, while the shared stages still move quickly (short
        runs, large learning rates), leaves the running statistics far behind
        the batch statistics the network was trained with, so evaluation (``train=False``) degrades.
        When the statistics drift faster than any running average follows
        (Adam on the layers before BatchNorm), recompute them at the final
        parameters with :meth:`recompute_batch_stats` before evaluating.

    References:
      Liu et al., CVPR 2019, https://arxiv.org/abs/1803.10704.
    """

    stages: Sequence[nn.Module]
    head: nn.Module
    num_tasks: int
    attention_features: int | None = None
    extractor: nn.Module | Sequence[nn.Module] | None = None
    batch_norm: bool = True
    batch_norm_momentum: float = 0.9

    def setup(self):
        check_positive(num_tasks=self.num_tasks)
        if self.attention_features is not None:
            check_positive(attention_features=self.attention_features)
        if not self.stages:
            raise ValueError("stages must hold at least one module")
        m = self.batch_norm_momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < 1.0:
            raise ValueError(f"batch_norm_momentum must be a float in [0, 1), got {m!r}")
        n, kt = len(self.stages), self.num_tasks
        if self.extractor is None:
            extractors = [_Extractor(self.batch_norm, m) for _ in range(n - 1)]
        elif isinstance(self.extractor, nn.Module):
            extractors = [self.extractor.clone(parent=None) for _ in range(n - 1)]
        else:
            if len(self.extractor) != n - 1:
                raise ValueError(
                    f"extractor needs one module per transition between stages "
                    f"({n - 1}), got {len(self.extractor)}"
                )
            extractors = [m.clone(parent=None) for m in self.extractor]
        self.extractors = extractors
        self.attention = [
            Stacked(
                _Attention(self.attention_features, self.batch_norm, m),
                kt,
                in_axis=(None, None) if j == 0 else (None, None, 0),
            )
            for j in range(n)
        ]
        self.heads = Stacked(self.head, kt, in_axis=0)

    def encode(self, x: jax.Array, *, train: bool = False) -> list[dict]:
        z, h = [], x
        for stage in self.stages:
            out = _split(call(stage, h, train=train))
            z.append(out)
            h = out["p"]
        return z

    def _extract(self, j: int, a: jax.Array, u: jax.Array, train: bool) -> jax.Array:
        """``pool(f^j(â))`` for all tasks at once: ``[K, B, ...]`` -> ``[K, B, ..., C_u]``."""
        kt, b = a.shape[:2]
        flat = jnp.reshape(a, (kt * b, *a.shape[2:]))
        f = self.extractors[j - 1]
        if self.extractor is None:
            h = f(flat, features=u.shape[-1], train=train)
        else:
            h = call(f, flat, train=train)
        src, dst = h.shape[1:-1], u.shape[1:-1]
        if src != dst:
            ratio = tuple(s // d if d else 0 for s, d in zip(src, dst))
            if len(src) != len(dst) or any(r < 1 or d * r != s for s, d, r in zip(src, dst, ratio)):
                raise ValueError(f"MTAN cannot max-pool spatial shape {src} to {dst}")
            h = nn.max_pool(h, ratio, strides=ratio)
        return jnp.reshape(h, (kt, b, *h.shape[1:]))

    def decode(self, z: list[dict], *, train: bool = False) -> jax.Array:
        a = None
        for j, out in enumerate(z):
            u = out.get("u", out["p"])
            if a is None:
                a = self.attention[j](u, out["p"], train=train)
            else:
                a = self.attention[j](u, out["p"], self._extract(j, a, u, train), train=train)
        return self.heads(a, train=train)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.decode(self.encode(x, train=train), train=train)

    def recompute_batch_stats(self, variables, x: jax.Array) -> dict:
        """The ``"batch_stats"`` collection recomputed at fixed parameters on ``x``.

        Every BatchNorm layer of :math:`f` and :math:`g` gets the mean and the
        (biased) variance of its input over ``x`` in a ``train=True`` pass, i.e.
        the statistics the trained network normalises with, instead of a running
        average over past parameters ("precise BatchNorm", Wu & Johnson 2021,
        https://arxiv.org/abs/2105.07576). Call it outside ``apply`` on the
        bound-free module, e.g. ``model.recompute_batch_stats(variables, x_train)``.

        Args:
          variables: the model's variables (``"params"``, ``"batch_stats"``, and any
            other collection of the stages or heads).
          x: a batch of training inputs, ``[N, ...]`` (as large as memory allows).

        Returns:
          ``{"batch_stats": ...}`` of the structure of ``variables["batch_stats"]``;
          note that BatchNorm layers inside user stages or heads are recomputed too.
        """
        if "batch_stats" not in variables:
            raise ValueError("variables has no 'batch_stats' collection (batch_norm=False?)")
        exact = self.clone(parent=None, batch_norm_momentum=0.0)
        _, new = exact.apply(variables, x, train=True, mutable=["batch_stats"])
        return {"batch_stats": new["batch_stats"]}

    @staticmethod
    def shared_mask(params) -> dict:
        """A ``shared=`` mask: True on the stages and the extractors ``f``, False elsewhere.

        Task-specific: the attention modules ``g`` and the heads.

        Args:
          params: the ``"params"`` collection or the whole variables dict.

        Returns:
          A pytree of bools with the structure of ``params``.
        """
        return path_mask(params, lambda p: p[0].startswith(("stages", "extractors")))
