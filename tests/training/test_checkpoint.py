"""Checkpoint and resume: bit-identical continuation, SIGKILL, corrupt files, a dead process."""

import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import mtl_jax as mtl

HERE = pathlib.Path(__file__).parent
WORKER = HERE / "checkpoint_worker.py"
sys.path.insert(0, str(HERE))
import checkpoint_worker  # noqa: E402

K = 3


def _problem():
    """A two-layer shared trunk with three linear heads (a dict of params)."""
    rng = np.random.default_rng(0)
    params = {
        "trunk": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
        "heads": jnp.asarray(rng.normal(size=(K, 5)), jnp.float32),
    }

    def loss_fn(p, batch):
        x, y = batch
        h = jnp.tanh(x @ p["trunk"])  # [B, 5]
        pred = h @ p["heads"].T  # [B, K]
        return jnp.mean((pred - y) ** 2, axis=0)

    def batch(i):
        r = np.random.default_rng([7, i])
        return (r.normal(size=(6, 4)).astype(np.float32), r.normal(size=(6, K)).astype(np.float32))

    return params, loss_fn, batch


def _plain(tree):
    """Leaves as NumPy arrays, typed PRNG keys as their key data."""
    leaves = [np.asarray(x) if np.isscalar(x) else x for x in jax.tree_util.tree_leaves(tree)]
    return [
        np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in leaves
    ]


def _assert_bitwise(a, b):
    la, lb = _plain(a), _plain(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


BALANCERS = {
    "equal_weighting": lambda: mtl.balancers.equal_weighting(),
    "equal_weighting_k": lambda: mtl.balancers.equal_weighting(num_tasks=K),
    "uncertainty_weighting": lambda: mtl.balancers.uncertainty_weighting(num_tasks=K),
    "rlw": lambda: mtl.balancers.rlw(num_tasks=K, seed=0),
    "mgda": lambda: mtl.balancers.mgda(),
    "mgda_k": lambda: mtl.balancers.mgda(num_tasks=K),
    "pcgrad": lambda: mtl.balancers.pcgrad(seed=0),
    "pcgrad_k": lambda: mtl.balancers.pcgrad(seed=0, num_tasks=K),
    "graddrop": lambda: mtl.balancers.graddrop(seed=0),
}


@pytest.mark.parametrize("name", [*BALANCERS, "mgda_representation"])
def test_restored_state_continues_bit_identically(name, tmp_path):
    params, loss_fn, batch = _problem()
    if name == "mgda_representation":
        rep = mtl.training.Representation(
            encode=lambda p, b: jnp.tanh(b[0] @ p["trunk"]),
            decode=lambda p, z, b: jnp.mean((z @ p["heads"].T - b[1]) ** 2, axis=0),
        )
        step = mtl.training.make_train_step(
            loss_fn,
            mtl.balancers.mgda(),
            optax.adam(1e-2),
            mode="representation",
            representation=rep,
        )
    else:
        step = mtl.training.make_train_step(loss_fn, BALANCERS[name](), optax.adam(1e-2))
    state = step.init(params)
    for i in range(3):
        state, _ = step(state, batch(i))
    with mtl.training.Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
        assert ckpt.save(3, state, extra={"data_position": 3})
    # A new Checkpointer (as after a restart) restores into the structure of a fresh init.
    with mtl.training.Checkpointer(tmp_path, save_every=1, keep=2) as ckpt:
        restored, extra = ckpt.restore_latest(step.init(params))
    assert isinstance(restored, mtl.training.TrainState)
    assert extra == {"data_position": 3}
    assert int(restored.step) == 3
    _assert_bitwise(restored, state)
    want, want_metrics = step(state, batch(3))
    got, got_metrics = step(restored, batch(3))
    _assert_bitwise(got, want)
    _assert_bitwise(got_metrics, want_metrics)


def _toy_state(i: int):
    """A state-like pytree with a typed PRNG key, an int counter and a zero-size leaf."""
    return {
        "w": jnp.arange(6.0).reshape(2, 3) * i,
        "key": jax.random.fold_in(jax.random.key(0), i),
        "count": jnp.asarray(i, jnp.int32),
        "placeholder": jnp.zeros((0,), jnp.float32),
        "epoch": i // 4,
    }


def test_save_every_keep_and_force(tmp_path):
    with mtl.training.Checkpointer(tmp_path, save_every=3, keep=2, async_save=False) as ckpt:
        assert ckpt.restore_latest(_toy_state(0)) is None
        saved = [i for i in range(1, 11) if ckpt.save(i, _toy_state(i), extra={"pos": i})]
        assert ckpt.save(10, _toy_state(10), extra={"pos": 10}, force=True)
        assert not ckpt.save(10, _toy_state(10), force=True)  # already saved
        assert not ckpt.save(7, _toy_state(7), force=True)  # behind the latest
        assert saved == [3, 6, 9]
        assert ckpt.all_steps() == [9, 10]  # keep=2
        restored, extra = ckpt.restore_latest(_toy_state(0))
    assert extra == {"pos": 10}
    assert set(restored) == set(_toy_state(0))
    assert type(restored["epoch"]) is int and restored["epoch"] == 2
    _assert_bitwise(restored, _toy_state(10))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_every must be a positive int, got 0"):
        mtl.training.Checkpointer(tmp_path, save_every=0)
    with pytest.raises(ValueError, match="keep must be a positive int or None, got -1"):
        mtl.training.Checkpointer(tmp_path, keep=-1)
    state = {"w": jnp.ones(2)}
    with mtl.training.Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
            ckpt.save(1, state, extra={"x": object()})
        with pytest.raises(ValueError, match="step must be a non-negative integer; got -1"):
            ckpt.save(-1, state)
        assert ckpt.save(1, state)
        ckpt.wait()
        with pytest.raises(ValueError, match=r"leaf 'w' has shape \(2,\) in the checkpoint"):
            ckpt.restore_latest({"w": jnp.ones(3)})
        with pytest.raises(ValueError, match="another structure"):
            ckpt.restore_latest({"v": jnp.ones(2)})


def _corrupt(step_dir: pathlib.Path, how: str) -> None:
    if how == "meta":
        (step_dir / "meta" / "metadata").write_text('{"format": "mtl_j')
        return
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        data = f.read_bytes()
        if how == "truncate":
            f.write_bytes(data[: len(data) // 2])
        else:  # flip one byte near the end of every data file
            i = len(data) - 3
            f.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])


# A failed tensorstore read can leave a callback that fires on orbax's already-closed event loop
# ("Exception ignored ... Event loop is closed"): noise from the library, not a test failure.
_ORBAX_READ_NOISE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_ORBAX_READ_NOISE
@pytest.mark.parametrize("how", ["truncate", "flip", "meta"])
def test_corrupt_latest_falls_back_to_previous(how, tmp_path):
    with mtl.training.Checkpointer(tmp_path, save_every=2, keep=3) as ckpt:
        for i in range(1, 5):
            ckpt.save(i, _toy_state(i), extra={"data_position": i})
    _corrupt(tmp_path / "4", how)
    with mtl.training.Checkpointer(tmp_path, save_every=2, keep=3) as ckpt:
        with pytest.warns(UserWarning, match="checkpoint at step 4 .* is corrupt"):
            restored, extra = ckpt.restore_latest(_toy_state(0))
        assert extra == {"data_position": 2}
        _assert_bitwise(restored, _toy_state(2))
        # The bad step is set aside, so the resumed run can save step 4 again.
        assert ckpt.all_steps() == [2]
        assert (tmp_path / "corrupt" / "4").is_dir()
        assert ckpt.save(4, _toy_state(4), extra={"data_position": 4})
        ckpt.wait()
        restored, extra = ckpt.restore_latest(_toy_state(0))
    assert extra == {"data_position": 4}
    _assert_bitwise(restored, _toy_state(4))


def test_half_written_step_is_ignored_and_cleaned(tmp_path):
    """A process killed mid-save leaves only orbax's temporary directory, never a step."""
    with mtl.training.Checkpointer(tmp_path, save_every=2) as ckpt:
        ckpt.save(2, _toy_state(2), extra={"data_position": 2})
    half = tmp_path / "4.orbax-checkpoint-tmp-1796158957"
    (half / "state").mkdir(parents=True)
    (half / "state" / "_METADATA").write_bytes(b'{"tree_metadata": {"w": ')
    with mtl.training.Checkpointer(tmp_path, save_every=2) as ckpt:
        assert ckpt.all_steps() == [2]
        restored, extra = ckpt.restore_latest(_toy_state(0))
        assert extra == {"data_position": 2}
        _assert_bitwise(restored, _toy_state(2))
        assert ckpt.save(4, _toy_state(4), extra={"data_position": 4})
    assert not half.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4"]


@_ORBAX_READ_NOISE
def test_every_checkpoint_corrupt_raises_and_keeps_them(tmp_path):
    """Checkpoints exist but none restores: raise (a restart must not silently start at 0)."""
    with mtl.training.Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, _toy_state(1))
        ckpt.save(2, _toy_state(2))
    _corrupt(tmp_path / "1", "truncate")
    _corrupt(tmp_path / "2", "flip")
    with mtl.training.Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.warns(UserWarning) as record:
            with pytest.raises(mtl.training.CorruptCheckpointError, match=r"steps \[2, 1\]"):
                ckpt.restore_latest(_toy_state(0))
        messages = [str(w.message) for w in record]
        assert any("step 2" in m and "is corrupt" in m for m in messages), messages
        assert any("step 1" in m and "is corrupt" in m for m in messages), messages
        # Nothing is moved aside when there is nothing to fall back to: a second restart
        # raises again instead of finding an empty directory and starting from scratch.
        assert ckpt.all_steps() == [1, 2]
        assert not (tmp_path / "corrupt").exists()
        with pytest.warns(UserWarning), pytest.raises(mtl.training.CorruptCheckpointError):
            ckpt.restore_latest(_toy_state(0))


def _inject(monkeypatch, exc, *, item="state"):
    """Makes orbax's restore of ``item`` raise ``exc`` (the other item reads normally)."""
    real = ocp.CheckpointManager.restore

    def restore(self, step, *args, **kwargs):
        if item in kwargs.get("args", {}).keys():
            raise exc
        return real(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)


@pytest.mark.parametrize(
    "make_exc",
    [
        lambda: OSError(5, "Input/output error"),
        MemoryError,
        lambda: ValueError("UNAVAILABLE: the file system is not reachable"),
    ],
    ids=["oserror", "memoryerror", "unavailable"],
)
@pytest.mark.parametrize("item", ["state", "meta"])
def test_read_error_that_is_not_corruption_propagates(make_exc, item, tmp_path, monkeypatch):
    """A transient or resource error names the step and leaves every checkpoint in place."""
    # A fresh exception per test: one instance shared by the parametrizations would carry
    # the previous test's traceback (and the checkpointers its frames hold) into the next.
    exc = make_exc()
    with mtl.training.Checkpointer(tmp_path, save_every=2, async_save=False) as ckpt:
        for i in (2, 4):
            ckpt.save(i, _toy_state(i), extra={"data_position": i})
    with mtl.training.Checkpointer(tmp_path, save_every=2, async_save=False) as ckpt:
        _inject(monkeypatch, exc, item=item)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(type(exc)) as info:
                ckpt.restore_latest(_toy_state(0))
        assert not [w for w in caught if "corrupt" in str(w.message)]  # not taken for corruption
        assert info.value is exc
        assert any(str(tmp_path / "4") in note for note in info.value.__notes__)
        monkeypatch.undo()
        assert ckpt.all_steps() == [2, 4]
        assert not (tmp_path / "corrupt").exists()
        _, extra = ckpt.restore_latest(_toy_state(0))
    assert extra == {"data_position": 4}


def test_template_bug_propagates_and_keeps_the_checkpoint(tmp_path):
    """A template leaf that is not an array is the caller's bug, not a corrupt checkpoint."""
    with mtl.training.Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, {"w": jnp.ones(2), "n": 3})
    bad_template = {"w": jnp.ones(2), "n": "three"}
    with mtl.training.Checkpointer(tmp_path, save_every=1) as ckpt:
        with pytest.raises(TypeError, match="state leaf 'n' is a str") as info:
            ckpt.restore_latest(bad_template)
        assert any(str(tmp_path / "1") in note for note in info.value.__notes__)
        assert ckpt.all_steps() == [1]
        restored, _ = ckpt.restore_latest({"w": jnp.zeros(2), "n": 0})
    assert restored["n"] == 3


class _Lines:
    """Reads a process's stdout lines in a thread, so waits can time out."""

    def __init__(self, proc):
        self.proc, self.lines, self.q = proc, [], queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for raw in self.proc.stdout:
            self.q.put(raw.decode(errors="replace").strip())
        self.q.put(None)

    def wait_for(self, prefix: str | tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} within {timeout}s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"process ended before {prefix!r}; got {self.lines}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line


def _launch(args, log=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
    )


def _npz(path):
    got = np.load(path)
    return [got[f"arr_{i}"] for i in range(len(got.files))]


def test_sigkill_mid_run_resumes_to_identical_params(tmp_path):
    steps, every = 30, 4
    ckpt_dir, out = tmp_path / "ckpt", tmp_path / "params.npz"
    proc = _launch([ckpt_dir, steps, every, out, 0.05])
    try:
        lines = _Lines(proc)
        assert lines.wait_for("fresh", 120) == "fresh"
        lines.wait_for("step 10", 120)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert not out.exists()
    # Restart (in this process): resume from the latest checkpoint and finish.
    resumed = []
    with mtl.training.Checkpointer(ckpt_dir, save_every=every, keep=2) as ckpt:
        state = checkpoint_worker.train(steps, ckpt=ckpt, report=resumed.append)
    # At step 8 the save of step 4 had finished (orbax waits for it), so >= 4 survives the kill.
    assert resumed[0] in ("resumed 4", "resumed 8"), resumed[:2]
    ref = checkpoint_worker.train(steps)
    assert int(state.step) == int(ref.step) == steps
    _assert_bitwise(state.params, ref.params)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_pair(ckpt_dir, steps, every, out, delay, tmp_path, tag, *ref):
    port = _free_port()
    logs = [open(tmp_path / f"{tag}{i}.log", "wb") for i in range(2)]
    procs = [
        _launch([ckpt_dir, steps, every, out, delay, i, 2, port, *ref], log=logs[i])
        for i in range(2)
    ]
    return procs, logs


@pytest.mark.multiprocess
def test_dead_process_fails_fast_and_restart_resumes(tmp_path, monkeypatch):
    """Kill one of two jax.distributed processes; the other must exit with an error, not hang."""
    steps, every, hb = 16, 4, 10
    monkeypatch.setenv("MTL_TEST_HEARTBEAT_S", str(hb))
    ckpt_dir, out = tmp_path / "ckpt", tmp_path / "params.npz"
    ref_out = tmp_path / "ref.npz"
    procs, logs = _launch_pair(ckpt_dir, steps, every, out, 0.2, tmp_path, "run")
    try:
        lines = [_Lines(p) for p in procs]
        lines[1].wait_for("step 6", 180)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            rc = procs[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the surviving process still runs 60 s after its peer died")
        waited = time.monotonic() - killed_at
    finally:
        for p in procs:
            p.kill()
        for f in logs:
            f.close()
    log = (tmp_path / "run0.log").read_text(errors="replace")
    assert rc != 0
    assert "Gloo" in log or "distributed service detected fatal errors" in log, log[-2000:]
    # Documented bound: the heartbeat timeout plus the shutdown timeout, and slack for a busy CI.
    assert waited < 2 * hb + 30, waited
    assert "done" not in lines[0].lines
    # A restart of both resumes from the last checkpoint and ends where an uninterrupted
    # 2-process run (the same two processes then train from scratch) ends.
    # The restart is not about failure detection: a long heartbeat keeps a busy machine's
    # slow compilation from being taken for a dead peer.
    monkeypatch.setenv("MTL_TEST_HEARTBEAT_S", "120")
    procs, logs = _launch_pair(ckpt_dir, steps, every, out, 0, tmp_path, "resume", ref_out)
    try:
        lines = [_Lines(p) for p in procs]
        resumed = [ln.wait_for(("fresh", "resumed"), 180) for ln in lines]
        for p in procs:
            assert p.wait(timeout=240) == 0
    finally:
        for p in procs:
            p.kill()
        for f in logs:
            f.close()
    assert resumed[0] == resumed[1] and resumed[0].startswith("resumed "), resumed
    assert int(resumed[0].split()[1]) >= every
    ref, got = _npz(ref_out), _npz(out)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    print(f"survivor exited {waited:.1f} s after its peer was killed (heartbeat timeout {hb} s)")
