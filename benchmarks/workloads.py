"""The benchmark workloads of ``benchmarks/PEERS.md``: W1 conv-hps, W2 gradnorm-toy, W3 aggregator.

Each training workload bundles parameters, one fixed batch, the per-task loss
function ``(params, batch) -> losses[K]``, the encoder/decoder split used by
representation mode and the ``shared=`` mask (the encoder's leaves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_jax as mtl

__all__ = ["Aggregator", "Workload", "aggregator", "conv_hps", "gradnorm_toy"]


class Workload(NamedTuple):
    name: str  # "W1 conv-hps" / "W2 gradnorm-toy"
    num_tasks: int
    params: Any
    batch: Any
    loss_fn: Callable[[Any, Any], jax.Array]  # (params, batch) -> losses[K]
    representation: mtl.training.Representation
    shared: Any  # pytree of bools over params: True on the encoder


def _hps_workload(name, model, x, loss_from_outputs, batch, seed) -> Workload:
    params = model.init(jax.random.key(seed), x)["params"]

    def encode(p, b):
        return model.apply({"params": p}, b[0], method="encode")

    def decode(p, z, b):
        return loss_from_outputs(model.apply({"params": p}, z, method="decode"), b)

    def decode_tasks(p, zs, b):  # head k reads only zs[k]: one backward through the heads
        return loss_from_outputs(model.apply({"params": p}, zs, method="decode_tasks"), b)

    def loss_fn(p, b):
        return decode(p, encode(p, b), b)

    k = model.num_tasks
    shared = model.shared_mask(params)
    rep = mtl.training.Representation(encode, decode, decode_tasks=decode_tasks)
    return Workload(name, k, params, batch, loss_fn, rep, shared)


def conv_hps(num_tasks: int, *, batch_size: int = 64, seed: int = 0) -> Workload:
    """W1: CelebA-like multi-attribute classification with a hard-parameter-sharing conv net.

    Inputs ``[batch, 32, 32, 3]`` ~ N(0, 1), targets ``[batch, K]`` ~ Bernoulli(0.5);
    shared encoder Conv3×3(32)/pool, Conv3×3(64)/pool, Conv3×3(128)/GAP,
    Dense(128) (109,760 parameters); ``K`` Dense(128→1) heads; loss ``k`` = sigmoid
    binary cross-entropy of column ``k``, mean over the batch.
    """
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, size=(batch_size, num_tasks)), jnp.float32)

    def losses(out, b):  # out: [K, batch, 1]
        logits = jnp.reshape(out, (num_tasks, -1))
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, b[1].T), axis=1)

    model = mtl.models.conv_hps(num_tasks)
    return _hps_workload(f"W1 conv-hps K={num_tasks}", model, x, losses, (x, y), seed)


def gradnorm_toy(num_tasks: int = 10, *, seed: int = 0) -> Workload:
    """W2: the GradNorm synthetic regression, ``K`` tasks (10 in PEERS.md).

    Inputs ``[100, 250]``; targets ``σ_i tanh(x (B + ε_i)ᵀ)``, ``[K, 100, 100]``;
    trunk 4 × Dense(100)+ReLU (55,400 parameters); ``K`` Dense(100→100) heads;
    loss ``i`` = mean squared error.
    """
    data = mtl.data.toy_regression(num_tasks, num_train=100, num_test=1, seed=seed)
    x = jnp.asarray(data.x_train)
    y = jnp.asarray(data.y_train)

    def losses(out, b):  # out: [K, batch, 100]
        return jnp.mean((out - b[1]) ** 2, axis=(1, 2))

    model = mtl.models.mlp_hps(num_tasks)
    return _hps_workload(f"W2 gradnorm-toy K={num_tasks}", model, x, losses, (x, y), seed)


class Aggregator(NamedTuple):
    name: str
    num_tasks: int
    jac: Any  # {"w": [K, P]}
    losses: jax.Array  # [K]


def aggregator(num_tasks: int, *, dim: int = 1_000_000, seed: int = 0) -> Aggregator:
    """W3: a task Jacobian ``[K, P]``, float32, partly conflicting tasks.

    ``J_k = s + n_k`` with a shared component ``s`` and task noise ``n_k`` of the
    same scale (all N(0, 1)), so that task gradients have cosine ≈ 0.5 on average
    and some pairs conflict on part of the coordinates.
    """
    key_s, key_n, key_l = jax.random.split(jax.random.key(seed), 3)
    s = jax.random.normal(key_s, (1, dim), jnp.float32)
    n = jax.random.normal(key_n, (num_tasks, dim), jnp.float32)
    losses = jax.random.uniform(key_l, (num_tasks,), jnp.float32, 0.5, 2.0)
    return Aggregator(f"W3 aggregator K={num_tasks}", num_tasks, {"w": s + n}, losses)
