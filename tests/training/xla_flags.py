"""``XLA_FLAGS`` for the worker scripts the tests start as separate processes."""

import os


def set_cpu_device_count(num: int) -> None:
    """Gives this process ``num`` CPU devices, keeping the run's other XLA flags.

    The other flags are the test run's compile settings (``tests/conftest.py``); call
    this before importing JAX.
    """
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([f"--xla_force_host_platform_device_count={num}", *kept])
