"""One step, any scale: 1 device, 4 fake devices (Explicit and Auto mesh axes) and
2 ``jax.distributed`` processes agree to 1e-5 after 10 steps, and the same seed
gives bit-identical results run to run, in one process and across processes.

One balancer of each kind (loss: DWA, Gram: MGDA, Jacobian: GradDrop, seeded),
in the full-parameter and the representation route.
"""

import functools
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

import mtl_jax as mtl

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from step_problem import SCALE_CASES, make_batch, make_step, train  # noqa: E402

AXIS_TYPES = {"explicit": AxisType.Explicit, "auto": AxisType.Auto}


@functools.cache
def _single(name, mode):
    return train(make_step(name, mode))


def _mesh(axis_type: str):
    return jax.make_mesh((4,), ("data",), axis_types=(AXIS_TYPES[axis_type],))


def _assert_close(got, ref, atol=1e-5):
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, atol=atol, rtol=0)


def test_default_mesh_is_explicit():
    # The README's recipe: jax.make_mesh without axis_types gives Explicit axes here.
    assert jax.make_mesh((4,), ("data",)).axis_types == (AxisType.Explicit,)


# Every route on both axis types; a loss-only balancer's representation route is
# its loss route, so it runs on the default (Explicit) mesh only.
FOUR_DEVICE_CASES = [(c, t) for c in SCALE_CASES for t in sorted(AXIS_TYPES)]
FOUR_DEVICE_CASES.remove((("dwa", "representation"), "auto"))


@pytest.mark.parametrize(
    ("case", "axis_type"),
    FOUR_DEVICE_CASES,
    ids=[f"{':'.join(c)}-{t}" for c, t in FOUR_DEVICE_CASES],
)
def test_four_devices_match_one(case, axis_type):
    mesh = _mesh(axis_type)
    step = make_step(*case, mesh=mesh)
    place = lambda b: mtl.training.shard_batch(b, mesh)
    assert len(place(make_batch())["x"].sharding.device_set) == 4
    _assert_close(train(step, place=place), _single(*case))


def test_same_seed_bit_identical_in_process():
    for case in [("graddrop", "representation"), ("mgda", "jacobian")]:
        first = _single(*case)
        again = train(make_step(*case))
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("axis_type", sorted(AXIS_TYPES))
def test_indivisible_batch_is_a_clear_error(axis_type):
    mesh = _mesh(axis_type)
    step = make_step("mgda", "jacobian", mesh=mesh)
    batch = make_batch(n=10)
    with pytest.raises(ValueError, match=r"batch size 10 .* not divisible by the 4 devices"):
        mtl.training.shard_batch(batch, mesh)
    with pytest.raises(ValueError, match=r"batch size 10 .* not divisible by the 4 devices"):
        step(step.init(jax.tree_util.tree_map(np.asarray, _params())), batch)


def _params():
    from step_problem import make_params

    return make_params()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc: int, out: pathlib.Path, cases: list[str], pid_offset: int = 0):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    port = str(_free_port())
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "multihost_worker.py"),
                str(nproc),
                str(i),
                port,
                str(out),
                *cases,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(pid_offset, pid_offset + (nproc if nproc > 1 else 1))
    ]


def _wait(procs, timeout=300):
    logs = []
    for p in procs:
        try:
            stdout, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        logs.append(stdout.decode(errors="replace"))
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)


def _load(path, case):
    data = np.load(path)
    keys = sorted(
        (k for k in data.files if k.startswith(":".join(case) + ":")),
        key=lambda k: int(k.rsplit(":", 1)[1]),
    )
    return [data[k] for k in keys]


def test_same_seed_bit_identical_across_processes(tmp_path):
    cases = [("graddrop", "representation"), ("mgda", "jacobian")]
    outs = [tmp_path / f"run{i}.npz" for i in range(2)]
    procs = []
    for out in outs:
        procs += _launch(1, out, [":".join(c) for c in cases])
    _wait(procs)
    for case in cases:
        a, b = (_load(out, case) for out in outs)
        assert a
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        _assert_close(a, _single(*case), atol=1e-6)


@pytest.mark.multiprocess
def test_two_processes_match_one(tmp_path):
    """One launch of 2 jax.distributed processes (2 devices each) runs every case."""
    out = tmp_path / "params.npz"
    _wait(_launch(2, out, []))
    for case in SCALE_CASES:
        _assert_close(_load(out, case), _single(*case))
