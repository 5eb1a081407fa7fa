"""The per-task VJPs of the Gramian route run one task at a time: the compiled step's
temporary memory does not grow with the number of tasks (issue 16: it grew by
~15.8 MB per task on W1 before the VJPs were chained and the CPU scheduler chosen).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_jax as mtl
from mtl_jax._jacobian import task_map


class _PoolNet(nn.Module):
    """Conv / max-pool / conv / mean -> Dense -> ``num_tasks`` logits (max-pool: the
    select-and-scatter backward whose buffers XLA CPU's default scheduler hoisted)."""

    num_tasks: int

    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), (2, 2))
        x = jnp.mean(nn.relu(nn.Conv(16, (3, 3))(x)), axis=(1, 2))
        return nn.Dense(self.num_tasks)(nn.relu(nn.Dense(16)(x)))


def _temp_bytes(k: int, mode: str = "gramian", chunk_size=None) -> tuple[int, int]:
    """Compiled temp bytes of the step and the bytes of one task's Jacobian row."""
    net = _PoolNet(k)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 16, 16, 3)), jnp.float32)
    y = jnp.ones((32, k), jnp.float32)
    params = net.init(jax.random.key(0), x)["params"]

    def loss_fn(p, b):
        logits = net.apply({"params": p}, b[0])
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, b[1]), axis=0)

    step = mtl.training.make_train_step(
        loss_fn, mtl.balancers.mgda(), optax.sgd(0.1), mode=mode, chunk_size=chunk_size
    )
    compiled = step.step.lower(step.init(params), (x, y)).compile()
    row = sum(leaf.size * 4 for leaf in jax.tree_util.tree_leaves(params))
    return compiled.memory_analysis().temp_size_in_bytes, row


def test_gramian_step_memory_does_not_grow_with_tasks():
    # One task's activation gradient at the first layer is 32·16·16·16·4 B = 0.5 MB.
    # Before the fix the temp memory grew by ~0.63 MB per task (5.2 MB at K = 2,
    # 14.0 MB at K = 16); now it is 4.35 MB at both.
    small, _ = _temp_bytes(2)
    large, row = _temp_bytes(8)
    # Allowed growth: the 6 extra Jacobian rows (kept for G and the update), a few
    # copies of them, and 0.5 MB of slack (< one task's activation gradients).
    assert large <= small + 4 * 6 * row + 512 * 1024, (small, large, row)


def test_chained_chunks_keep_each_tasks_nonfinite_values_to_itself():
    # Chunk k+1's cotangents carry a zero computed from chunk k's result; a NaN or
    # inf in chunk k must not reach chunk k+1 (nor change finite values).
    def fn(e):
        return {"a": e * jnp.array([jnp.nan, 1.0, 2.0]), "b": e[::-1] * jnp.inf}

    out = jax.jit(lambda: task_map(fn, 3, jnp.float32, 1))()
    expected = jax.vmap(fn)(jnp.eye(3))
    np.testing.assert_array_equal(np.asarray(out["a"]), np.asarray(expected["a"]))
    np.testing.assert_array_equal(np.asarray(out["b"]), np.asarray(expected["b"]))
