"""Hard parameter sharing: one shared encoder, one head per task.

Caruana, "Multitask Learning", Machine Learning 28 (1997). The heads are stored
as one stacked parameter per leaf (leading task axis) and applied with
``jax.vmap``, so no Python loop over tasks runs in the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models._stacking import call, path_mask

__all__ = ["HardParameterSharing", "MultiHeadDense"]


class MultiHeadDense(nn.Module):
    """``K`` independent affine heads on a shared input: ``y_k = z W_k + b_k``.

    Attributes:
      num_tasks: ``K``.
      features: output size of each head.

    Input ``[..., d]``; output ``[K, ..., features]``. With ``per_task=True`` the
    input has a leading task axis, ``[K, ..., d]``, and head ``k`` reads only
    ``z[k]`` (what :class:`mtl_jax.training.Representation`'s ``decode_tasks``
    needs).
    """

    num_tasks: int
    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, z: jax.Array, *, per_task: bool = False) -> jax.Array:
        if per_task and (z.ndim < 2 or z.shape[0] != self.num_tasks):
            raise ValueError(
                f"per_task=True needs z of shape [K={self.num_tasks}, ..., d], got {z.shape}"
            )
        d = z.shape[-1]
        kernel = self.param(
            "kernel",
            lambda key, shape: jax.vmap(lambda k: self.kernel_init(k, shape[1:]))(
                jax.random.split(key, shape[0])
            ),
            (self.num_tasks, d, self.features),
        )
        bias = self.param("bias", self.bias_init, (self.num_tasks, self.features))
        if per_task:
            y = jnp.einsum("k...d,kdf->k...f", z, kernel)
            return y + jnp.reshape(bias, (self.num_tasks,) + (1,) * (z.ndim - 2) + (self.features,))
        y = jnp.einsum("...d,kdf->k...f", z, kernel)
        return y + jnp.reshape(bias, (self.num_tasks,) + (1,) * (z.ndim - 1) + (self.features,))


class HardParameterSharing(nn.Module):
    """A shared encoder followed by ``K`` task heads.

    ``__call__(x, *, train=False)`` returns the stacked head outputs
    ``[K, batch, out]``; ``encode(x, *, train=False)`` returns the shared
    representation and ``decode(z)`` applies the heads to it, so
    ``decode(encode(x)) == __call__(x)``. ``train`` is passed on to the encoder
    when its ``__call__`` declares it (see :mod:`mtl_jax.models`: Dropout and
    BatchNorm in the encoder follow it). Parameters live under ``"encoder"``
    (shared) and ``"heads"`` (task-specific, leading task axis).

    Attributes:
      encoder: any Flax module mapping inputs to a ``[batch, d]`` representation.
      num_tasks: ``K``.
      head_features: output size of each head.
    """

    encoder: nn.Module
    num_tasks: int
    head_features: int = 1

    def setup(self):
        self.heads = MultiHeadDense(self.num_tasks, self.head_features)

    def encode(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return call(self.encoder, x, train=train)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.heads(z)

    def decode_tasks(self, zs: jax.Array) -> jax.Array:
        """Head ``k`` applied to ``zs[k]`` (``zs``: ``[K, batch, d]``), for ``decode_tasks``.

        ``decode_tasks(broadcast(z)) == decode(z)``; given to
        :class:`mtl_jax.training.Representation` it lets representation mode take
        every per-task gradient w.r.t. ``z`` from one backward pass through the heads.
        """
        return self.heads(zs, per_task=True)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.decode(self.encode(x, train=train))

    @staticmethod
    def shared_mask(params) -> dict:
        """A ``shared=`` mask: True on the encoder's leaves, False on the heads'.

        On the ``"params"`` collection this equals passing ``shared="encoder"``;
        it also accepts the whole variables dict returned by ``init`` (an
        encoder's ``"batch_stats"`` are marked shared too).

        Args:
          params: the model's parameters.

        Returns:
          A pytree of bools with the structure of ``params``.
        """
        return path_mask(params, lambda p: p[0] == "encoder")
