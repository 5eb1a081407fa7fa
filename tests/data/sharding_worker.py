"""One process of the sharding test: ``python sharding_worker.py NPROC PID PORT OUT``.

Joins a ``jax.distributed`` run, reads one epoch through ``make_loader`` with its
default ``ShardByJaxProcess`` sharding and saves the record ids it saw to
``OUT.PID.npy``.
"""

import os
import sys


def main() -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    nproc, pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    assert jax.process_count() == nproc and jax.process_index() == pid
    import numpy as np

    import mtl_jax as mtl

    source = [{"i": np.int64(i)} for i in range(50)]
    loader = mtl.data.make_loader(source, batch_size=5, seed=0, num_epochs=1)
    seen = np.concatenate([b["i"] for b in loader])
    np.save(f"{out}.{pid}.npy", seen)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
