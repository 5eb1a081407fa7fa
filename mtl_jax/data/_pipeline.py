"""A deterministic, resumable, process-sharded input pipeline on Grain.

Grain (https://github.com/google/grain) reads any random-access source (a
``tfds.data_source``, a list, an ``ArrayRecordDataSource``) without TensorFlow.
The loader built here shuffles from a seed, reshuffles every epoch, batches, and
gives each JAX process a disjoint shard (``ShardByJaxProcess``; the same shard
options go to the sampler and the loader, and the batch size is per process).
Its iterator's position is a small state saved with the training checkpoint and
restored exactly (:func:`iterator_state`, :func:`restore_iterator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain.python as grain
import numpy as np

from mtl_jax import _validate

__all__ = ["iterator_state", "make_loader", "restore_iterator"]


def make_loader(
    source: Any,
    *,
    batch_size: int,
    seed: int,
    num_epochs: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    shard_options: grain.ShardOptions | None = None,
    operations: Sequence[grain.Transformation] = (),
    worker_count: int = 0,
) -> grain.DataLoader:
    """A Grain loader over ``source`` yielding batches as dicts (or arrays) of NumPy arrays.

    Record ``i`` of epoch ``e`` is ``source[π_e(i)]`` with ``π_e`` a permutation
    drawn from ``(seed, e)``: the stream is a function of ``seed`` alone, and each
    epoch is reshuffled. ``operations`` (e.g. ``grain.MapTransform``) run per
    record before batching.

    Args:
      source: a random-access source (``len`` and ``__getitem__``), e.g. from
        :func:`mtl_jax.data.data_source`.
      batch_size: examples per batch **on this process** (the global batch is
        ``batch_size × jax.process_count()``).
      seed: the shuffle seed.
      num_epochs: epochs to read; ``None`` for an endless stream.
      shuffle: shuffle records (otherwise they come in order).
      drop_remainder: drop a last, smaller batch.
      shard_options: how records are split across processes; ``None`` for
        ``grain.ShardByJaxProcess(drop_remainder=True)`` (disjoint, equal shards).
      operations: per-record transformations applied before batching.
      worker_count: Grain worker processes (0 reads in the calling thread).

    Returns:
      The ``grain.DataLoader``; ``iter(loader)`` gives a checkpointable iterator.

    Raises:
      ValueError: a non-positive ``batch_size`` or ``num_epochs``, a negative
        ``worker_count``, or an empty ``source``.
      TypeError: ``seed`` is not an int.
    """
    _validate.check_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs!r}")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count!r}")
    if len(source) == 0:
        raise ValueError("source must hold at least one record, got an empty source")
    if shard_options is None:
        shard_options = grain.ShardByJaxProcess(drop_remainder=True)
    sampler = grain.IndexSampler(
        num_records=len(source),
        shard_options=shard_options,
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=int(seed),
    )
    ops = [*operations, grain.Batch(batch_size=batch_size, drop_remainder=drop_remainder)]
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=ops,
        worker_count=worker_count,
        shard_options=shard_options,
    )


#: Bytes of :func:`iterator_state`'s array: Grain's JSON state padded with spaces.
STATE_SIZE = 4096


def iterator_state(iterator: grain.PyGrainDatasetIterator, *, size: int = STATE_SIZE) -> np.ndarray:
    """The iterator's position as a fixed-size uint8 array, to save inside a training checkpoint.

    Grain's own state (``iterator.get_state()``, JSON bytes) padded with trailing
    spaces to ``size`` bytes, so that it travels in the same pytree as the
    parameters and the optimiser state with the same shape at every step: the
    state of a fresh iterator is a valid restore template for
    :meth:`mtl_jax.training.Checkpointer.restore_latest`.

    Args:
      iterator: ``iter(loader)`` for a loader from :func:`make_loader`.
      size: the array's length in bytes.

    Returns:
      A ``[size]`` ``uint8`` array; :func:`restore_iterator` takes it back.

    Raises:
      ValueError: Grain's state is longer than ``size`` bytes.
    """
    raw = iterator.get_state()
    if len(raw) > size:
        raise ValueError(f"size must be at least the state's {len(raw)} bytes, got {size}")
    return np.frombuffer(raw.ljust(size, b" "), dtype=np.uint8).copy()


def restore_iterator(iterator: grain.PyGrainDatasetIterator, state: Any) -> None:
    """Moves ``iterator`` to the position saved by :func:`iterator_state`.

    The next batch is then the one that followed when the state was taken.

    Args:
      iterator: a fresh ``iter(loader)`` from a loader built with the same arguments.
      state: the array :func:`iterator_state` returned (possibly restored from a
        checkpoint), or Grain's state as bytes.

    Raises:
      TypeError: ``state`` is neither bytes nor a 1-D uint8 array.
    """
    if isinstance(state, bytes):
        iterator.set_state(state.rstrip(b" "))
        return
    arr = np.asarray(state)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise TypeError(f"state must be bytes or a 1-D uint8 array, got {arr.dtype}{arr.shape}")
    iterator.set_state(arr.tobytes().rstrip(b" "))
