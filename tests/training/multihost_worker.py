"""One process of the scale tests: ``python multihost_worker.py NPROC PID PORT OUT [CASE ...]``.

With ``NPROC=1`` it trains each case on one device (the subprocess determinism
test); with ``NPROC=2`` it joins a 2-process ``jax.distributed`` run over gloo,
each process owning 2 CPU devices of a 4-device data-parallel mesh, and feeds
its half of every batch. Process 0 writes the final params of every case to
``OUT`` (an ``.npz``). Cases are ``balancer:mode`` (default: all SCALE_CASES).
"""

import os
import sys

from xla_flags import set_cpu_device_count

set_cpu_device_count(2)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_numpy_rank_promotion", "raise")

import numpy as np  # noqa: E402
from step_problem import SCALE_CASES, make_step, train  # noqa: E402


def main() -> None:
    nproc, pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cases = [tuple(c.split(":")) for c in sys.argv[5:]] or SCALE_CASES
    if nproc > 1:
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
        assert jax.process_count() == nproc, jax.process_count()
    import mtl_jax as mtl

    mesh = jax.make_mesh((jax.device_count(),), ("data",)) if nproc > 1 else None

    def place(batch):
        if mesh is None:
            return batch
        n = next(iter(batch.values())).shape[0] // nproc
        local = {k: v[pid * n : (pid + 1) * n] for k, v in batch.items()}
        return mtl.training.shard_batch(local, mesh)

    results = {}
    for name, mode in cases:
        leaves = train(make_step(name, mode, mesh=mesh), place=place)
        for i, x in enumerate(leaves):
            results[f"{name}:{mode}:{i}"] = x
    if pid == 0:
        np.savez(out, **results)
    if nproc > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
