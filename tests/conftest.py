"""Strict JAX configuration shared by every test.

Four fake CPU devices are created before JAX is imported so that data-parallel
tests can build a mesh, and implicit rank promotion raises, so library code may
not rely on it. (Strict dtype promotion is not set: optax's own Adam fails
under it.)
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
# The suite compiles thousands of small programs and runs few large ones: LLVM at -O1
# compiles them markedly faster than XLA CPU's default -O3 (tests/models plus the
# scale-spread tests: 300 vs 323 CPU s), with the same IEEE float semantics (no
# fast-math either way). Subprocesses the tests start inherit it, and run_script's
# fresh interpreters get it too.
COMPILE_FLAGS = "--xla_backend_optimization_level=1"
if "xla_backend_optimization_level" not in _flags:
    _flags += " " + COMPILE_FLAGS
os.environ["XLA_FLAGS"] = _flags.strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# Helper scripts, not test modules (doctest collection would import them).
collect_ignore = [
    "training/multihost_worker.py",
    "training/training_problem.py",
    "training/checkpoint_worker.py",
]


def pytest_addoption(parser):
    parser.addoption(
        "--full-repro",
        action="store_true",
        default=False,
        help="run paper reproductions at full size instead of their fast CI form",
    )


@pytest.fixture
def repro_fast(request) -> bool:
    """True unless ``--full-repro`` was given: reproductions run their fast form."""
    return not request.config.getoption("--full-repro")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """The offline builders' cache (``$MTL_JAX_DATA_DIR``): a tmp dir, never the user's home.

    One directory per test run, shared by its pytest-xdist workers (the lock in
    :func:`mtl_jax.data.prepare` makes their concurrent preparations safe).
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / "mtl_jax_data"
    old = os.environ.get("MTL_JAX_DATA_DIR")
    os.environ["MTL_JAX_DATA_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MTL_JAX_DATA_DIR", None)
    else:
        os.environ["MTL_JAX_DATA_DIR"] = old


@pytest.fixture
def run_script(tmp_path):
    """Runs python ``code`` as a pasted file in a fresh interpreter on 4 CPU devices.

    Returns the completed process (stdout and stderr captured as text).
    """
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]

    def run(code: str, *, timeout: int = 300):
        script = tmp_path / "example.py"
        script.write_text(code)
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root))
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 " + COMPILE_FLAGS
        env.pop("MPLBACKEND", None)
        return subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
