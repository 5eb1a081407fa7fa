"""DSMT-Nets: the distantly supervised multi-task network for false-alarm suppression.

Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027. One perception
block per input stream, one auxiliary block per auxiliary task (trained on every
window, labelled or not), and a main head that reads the stream representation
and every auxiliary block's hidden state. The training procedure (losses, phase
schedule and step) is in :mod:`mtl_jax.recipes`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["DSMTNet"]


class _Conv1D(nn.Module):
    """A bias-free 1-D convolution with ``"SAME"`` padding: ``[B, T, C] -> [B, ⌈T/s⌉, F]``.

    Computed as a sum of ``width`` shifted matrix products rather than with
    ``lax.conv_general_dilated``: the result is the same, but under ``jax.vmap``
    over parameters (several seeds trained at once) XLA's CPU backend turns a
    convolution into a slow grouped convolution, while batched matrix products
    stay fast. The kernel ``[width, C, F]`` has ``nn.Conv``'s default initialiser.
    """

    features: int
    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param(
            "kernel", nn.initializers.lecun_normal(), (self.width, x.shape[-1], self.features)
        )
        t, s = x.shape[-2], self.stride
        out = -(-t // s)
        pad = max((out - 1) * s + self.width - t, 0)
        xp = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
        span = (out - 1) * s + 1
        patches = jnp.concatenate([xp[:, j : j + span : s] for j in range(self.width)], axis=-1)
        return patches @ w.reshape(-1, self.features).astype(x.dtype)


class _ResidualEncoder(nn.Module):
    """A 1-D residual network over one stream ``[B, T]`` ending in global average pooling."""

    channels: tuple[int, ...]
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        bn = lambda **kw: nn.BatchNorm(use_running_average=not self.train, **kw)
        h = x[..., None]
        for c in self.channels:
            h = nn.relu(bn()(_Conv1D(c, 7, stride=2)(h)))
            r = nn.relu(bn()(_Conv1D(c, 3)(h)))
            r = bn(scale_init=nn.initializers.zeros)(_Conv1D(c, 3)(r))
            h = nn.relu(h + r)
        return jnp.mean(h, axis=-2)


# One perception block per stream, with the streams' parameters and BatchNorm
# statistics stacked on a leading axis: the same network as S separate encoders,
# traced (and compiled) once instead of S times.
_StreamEncoders = nn.vmap(
    _ResidualEncoder,
    in_axes=1,
    out_axes=1,
    variable_axes={"params": 0, "batch_stats": 0},
    split_rngs={"params": True},
)


class _TaskDense(nn.Module):
    """``K`` independent affine maps: ``[B, K, d] -> [B, K, f]`` (or ``[B, d]`` shared input)."""

    num_tasks: int
    features: int
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        kernel = self.param("kernel", init, (self.num_tasks, d, self.features))
        bias = self.param("bias", self.bias_init, (self.num_tasks, self.features))
        if x.ndim == 2:
            return jnp.einsum("bd,kdf->bkf", x, kernel) + bias[None]
        return jnp.einsum("bkd,kdf->bkf", x, kernel) + bias[None]


def _highway(x, gate_bias, dense):
    """``T ⊙ relu(W_h x) + (1 - T) ⊙ x`` with ``T = σ(W_t x + b_t)``, ``b_t`` init ``gate_bias``."""
    h = nn.relu(dense(x.shape[-1], nn.initializers.zeros)(x))
    gate = nn.sigmoid(dense(x.shape[-1], nn.initializers.constant(gate_bias))(x))
    return gate * h + (1.0 - gate) * x


class DSMTNet(nn.Module):
    r"""A distantly supervised multi-task network (DSMT-Net).

    Each of the ``S`` streams passes its own perception block (a 1-D residual
    network with ``channels`` stages ending in global average pooling); the
    stream representations are concatenated with the ``S`` missing-stream
    indicators into :math:`r`. With ``aux_mode="blocks"`` each auxiliary task
    :math:`k` has its own block

    .. math::
       h_k = \mathrm{Highway}(\mathrm{Dropout}(\mathrm{ReLU}(\mathrm{BN}(W_k r)))),
       \quad \hat a_k = v_k^\top (h_k + \epsilon), \ \epsilon \sim \mathcal N(0, s^2)

    (the highway gate bias starts at ``gate_bias`` < 0, so the block starts
    close to the identity; the noise acts in training only). The main head reads
    :math:`[r, h_1, \dots, h_K]` through Dense(2·units) → BN → ReLU → Dropout →
    Highway → Dense(1) and gives the logit of a true alarm. ``aux_mode="naive"``
    is the naive multi-task baseline: one shared hidden block with all ``K``
    auxiliary outputs on one layer. ``num_aux_tasks=0`` is the plain supervised
    network.

    Dropout needs the ``"dropout"`` RNG and the noise the ``"noise"`` RNG when
    ``train=True``; BatchNorm keeps its running statistics in the mutable
    ``"batch_stats"`` collection.

    Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
    Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027.

    Attributes:
      num_aux_tasks: ``K >= 0``.
      channels: channels of the perception blocks' residual stages.
      units: hidden units of each auxiliary block (the head uses ``2 * units``).
      dropout_rate: dropout rate of the auxiliary blocks and the head.
      noise_std: standard deviation ``s`` of the auxiliary blocks' Gaussian noise.
      gate_bias: initial bias of the highway gates.
      aux_mode: ``"blocks"`` (DSMT-Net) or ``"naive"`` (all outputs on one layer).
    """

    num_aux_tasks: int
    channels: tuple[int, ...] = (16, 32)
    units: int = 16
    dropout_rate: float = 0.2
    noise_std: float = 0.35
    gate_bias: float = -3.0
    aux_mode: str = "blocks"

    def _check(self):
        if not isinstance(self.num_aux_tasks, int) or self.num_aux_tasks < 0:
            raise ValueError(f"num_aux_tasks must be an int >= 0; got {self.num_aux_tasks!r}")
        if self.aux_mode not in ("blocks", "naive"):
            raise ValueError(f"aux_mode must be 'blocks' or 'naive'; got {self.aux_mode!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1); got {self.dropout_rate}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0; got {self.noise_std}")

    @nn.compact
    def __call__(
        self, windows: jax.Array, missing: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """Applies the network.

        Args:
          windows: ``[B, S, T]`` stream samples.
          missing: ``[B, S]`` missing-stream indicators (1 = absent).
          train: training mode (batch statistics, dropout and noise).

        Returns:
          ``(logit [B], aux [B, K])``: the main output's logit and the auxiliary
          predictions.
        """
        self._check()
        if windows.ndim != 3 or missing.shape != windows.shape[:2]:
            raise ValueError(
                f"windows must be [B, S, T] and missing [B, S]; got {windows.shape}, "
                f"{missing.shape}"
            )
        k = self.num_aux_tasks
        reps = _StreamEncoders(self.channels, train, name="streams")(windows)  # [B, S, C]
        r = jnp.concatenate(
            [reps.reshape(reps.shape[0], -1), missing.astype(windows.dtype)], axis=-1
        )
        bn = lambda: nn.BatchNorm(use_running_average=not train)
        drop = lambda h: nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        head_in = [r]
        aux = jnp.zeros((windows.shape[0], 0), windows.dtype)
        if k and self.aux_mode == "blocks":
            h = _TaskDense(k, self.units, name="aux_dense")(r)  # [B, K, U]
            h = drop(nn.relu(bn()(h)))
            dense = lambda f, b: _TaskDense(k, f, bias_init=b)
            h = _highway(h, self.gate_bias, dense)
            head_in.append(h.reshape(h.shape[0], -1))
            if train and self.noise_std > 0:
                h = h + self.noise_std * jax.random.normal(self.make_rng("noise"), h.shape)
            aux = _TaskDense(k, 1, name="aux_out")(h)[..., 0]
        elif k:
            h = drop(nn.relu(bn()(nn.Dense(self.units, name="aux_dense")(r))))
            h = _highway(h, self.gate_bias, lambda f, b: nn.Dense(f, bias_init=b))
            head_in.append(h)
            if train and self.noise_std > 0:
                h = h + self.noise_std * jax.random.normal(self.make_rng("noise"), h.shape)
            aux = nn.Dense(k, name="aux_out")(h)
        z = jnp.concatenate(head_in, axis=-1)
        z = drop(nn.relu(bn()(nn.Dense(2 * self.units, name="head_dense")(z))))
        z = _highway(z, self.gate_bias, lambda f, b: nn.Dense(f, bias_init=b))
        logit = nn.Dense(1, name="head_out")(z)[:, 0]
        return logit, aux
