"""The Grain pipeline: deterministic, reshuffled per epoch, resumable, sharded, and
feeding a data-parallel train step exactly like a single-device one."""

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

N = 50


def _source(n=N):
    return [{"i": np.int64(i), "x": np.full(3, i, np.float32)} for i in range(n)]


def _stream(it, k):
    return [next(it)["i"].copy() for _ in range(k)]


def test_epochs_are_reshuffled_permutations_and_the_seed_fixes_the_stream():
    loader = mtl.data.make_loader(
        _source(), batch_size=5, seed=3, num_epochs=2, shard_options=grain.NoSharding()
    )
    batches = [b["i"] for b in loader]
    assert len(batches) == 20 and batches[0].shape == (5,)
    first, second = np.concatenate(batches[:10]), np.concatenate(batches[10:])
    assert sorted(first) == list(range(N)) and sorted(second) == list(range(N))
    assert not np.array_equal(first, second)  # reshuffled
    assert not np.array_equal(first, np.arange(N))  # shuffled
    again = [b["i"] for b in loader]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(batches))
    other = mtl.data.make_loader(
        _source(), batch_size=5, seed=4, num_epochs=1, shard_options=grain.NoSharding()
    )
    assert not np.array_equal(np.concatenate([b["i"] for b in other]), first)


@pytest.mark.parametrize("k", [0, 3, 12])
def test_resume_after_k_batches_equals_the_uninterrupted_stream(k):
    make = lambda: mtl.data.make_loader(
        _source(), batch_size=4, seed=7, shard_options=grain.NoSharding()
    )
    full = _stream(iter(make()), k + 15)  # crosses the epoch boundary (12 batches/epoch)
    it = iter(make())
    _stream(it, k)
    state = mtl.data.iterator_state(it)
    assert state.dtype == np.uint8 and state.ndim == 1
    del it  # "preemption": a fresh process rebuilds the loader from the same arguments
    resumed = iter(make())
    mtl.data.restore_iterator(resumed, state)
    rest = _stream(resumed, 15)
    for a, b in zip(rest, full[k:]):
        np.testing.assert_array_equal(a, b)


def test_shards_are_disjoint_and_cover_the_split():
    seen = []
    for index in range(2):
        opts = grain.ShardOptions(shard_index=index, shard_count=2, drop_remainder=True)
        loader = mtl.data.make_loader(
            _source(), batch_size=5, seed=0, num_epochs=1, shard_options=opts
        )
        seen.append(np.concatenate([b["i"] for b in loader]))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen)) == list(range(N))


def test_reads_a_prepared_builder(tmp_path):
    src = mtl.data.data_source("grad_norm_toy", split="train", data_dir=tmp_path)
    batch = next(iter(mtl.data.make_loader(src, batch_size=8, seed=0)))
    assert batch["x"].shape == (8, 250) and batch["y"].shape == (8, 10, 100)
    assert batch["x"].dtype == np.float32


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="batch_size"):
        mtl.data.make_loader(_source(), batch_size=0, seed=0)
    with pytest.raises(TypeError, match="seed"):
        mtl.data.make_loader(_source(), batch_size=2, seed=0.5)
    with pytest.raises(ValueError, match="num_epochs"):
        mtl.data.make_loader(_source(), batch_size=2, seed=0, num_epochs=0)
    with pytest.raises(ValueError, match="source"):
        mtl.data.make_loader([], batch_size=2, seed=0)
    it = iter(mtl.data.make_loader(_source(), batch_size=2, seed=0))
    with pytest.raises(TypeError, match="state"):
        mtl.data.restore_iterator(it, np.zeros((2, 2), np.float32))


def test_pipeline_feeds_data_parallel_step_like_a_single_device():
    k, n = 2, 64
    d = mtl.data.toy_regression(k, num_train=n, num_test=1, in_dim=8, out_dim=2, seed=1)
    y = np.moveaxis(d.y_train, 0, 1) / d.sigmas[:, None]
    source = [{"x": d.x_train[i], "y": y[i]} for i in range(n)]
    model = mtl.models.mlp_hps(k, hidden=8, out=2)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8)))

    def loss_fn(p, b):
        pred = model.apply(p, b["x"])
        return jnp.mean((pred - jnp.moveaxis(b["y"], 1, 0)) ** 2, axis=(1, 2))

    mesh = jax.make_mesh((4,), ("data",))
    results = []
    for m in [None, mesh]:
        step = mtl.training.make_train_step(loss_fn, mtl.balancers.mgda(), optax.sgd(0.05), mesh=m)
        state = step.init(params)
        loader = mtl.data.make_loader(source, batch_size=16, seed=0, num_epochs=1)
        for batch in loader:
            if m is not None:
                batch = mtl.training.shard_batch(batch, m)
            state, _ = step(state, batch)
        results.append(jax.tree_util.tree_leaves(state.params))
    for a, b in zip(*results):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    assert not np.allclose(
        np.asarray(results[0][0]), np.asarray(jax.tree_util.tree_leaves(params)[0])
    )


@pytest.mark.multiprocess
def test_two_jax_processes_read_disjoint_shards_covering_the_split(tmp_path):
    import os
    import pathlib
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    worker = pathlib.Path(__file__).parent / "sharding_worker.py"
    out = tmp_path / "seen"
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), "2", str(pid), port, str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for pid in range(2)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=180)[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    a, b = (np.load(f"{out}.{pid}.npy") for pid in range(2))
    assert len(a) == len(b) == 25
    assert not set(a) & set(b)
    assert sorted(np.concatenate([a, b])) == list(range(N))
