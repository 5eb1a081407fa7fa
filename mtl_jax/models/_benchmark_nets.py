"""The two benchmark networks of ``benchmarks/PEERS.md``.

* W1 ``conv_hps``: a CelebA-like multi-attribute classifier — a three-block
  convolutional encoder (109,760 shared parameters) and ``K`` Dense(128→1) heads.
* W2 ``mlp_hps``: the GradNorm synthetic-regression network (Chen et al. 2018,
  https://arxiv.org/abs/1711.02257, section 4) — a 4-layer ReLU trunk
  250→100→100→100→100 (55,400 parameters) and ``K`` Dense(100→100) heads.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models._hps import HardParameterSharing

__all__ = ["ConvEncoder", "MLPTrunk", "conv_hps", "mlp_hps"]


class ConvEncoder(nn.Module):
    """Conv3×3(32)+ReLU+pool2, Conv3×3(64)+ReLU+pool2, Conv3×3(128)+ReLU+GAP, Dense(128)+ReLU."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding="SAME")(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Conv(128, (3, 3), padding="SAME")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.relu(nn.Dense(128)(x))


class MLPTrunk(nn.Module):
    """``len(features)`` Dense+ReLU layers on the flattened input ``[B, ...] -> [B, -1]``."""

    features: tuple[int, ...] = (100, 100, 100, 100)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.reshape(x, (x.shape[0], -1))
        for f in self.features:
            x = nn.relu(nn.Dense(f)(x))
        return x


def conv_hps(num_tasks: int) -> HardParameterSharing:
    """W1: the conv encoder with ``num_tasks`` binary-classification heads (one logit each)."""
    return HardParameterSharing(ConvEncoder(), num_tasks, head_features=1)


def mlp_hps(num_tasks: int, *, hidden: int = 100, out: int = 100) -> HardParameterSharing:
    """W2: the GradNorm toy network, a 4×Dense(hidden)+ReLU trunk and affine heads."""
    return HardParameterSharing(MLPTrunk((hidden,) * 4), num_tasks, head_features=out)
