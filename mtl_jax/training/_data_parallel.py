"""Placing state and batches on a data-parallel mesh, in one process or several.

The training step replicates its state and shards the batch's leading axis over
the mesh's data axis; after ``jax.distributed.initialize`` each process feeds
its local part of the batch (the global array is assembled across processes).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mtl_jax.training import _checks

PyTree = Any


def put_replicated(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """``device_put`` onto a replicated sharding, also when it spans several processes."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree_util.tree_map(one, tree)


def shard_batch(batch: PyTree, mesh: Mesh, data_axis: str = "data") -> PyTree:
    """Places a batch on ``mesh`` sharded along its leading axis.

    In a single process ``batch`` is the global batch. In a multi-host run
    (after ``jax.distributed.initialize``) each process passes its *local* part
    and the global array is assembled across processes.
    """
    sharding = NamedSharding(mesh, P(data_axis))
    if data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")
    per_process = mesh.shape[data_axis] // max(jax.process_count(), 1)
    _checks.check_divisible(batch, max(per_process, 1), data_axis)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch
    )
