"""A small training run with checkpoints, killed and resumed by test_checkpoint.py.

Usage:
  python checkpoint_worker.py DIR NUM_STEPS SAVE_EVERY OUT_NPZ [DELAY_S]
  python checkpoint_worker.py DIR NUM_STEPS SAVE_EVERY OUT_NPZ DELAY_S \
      PROCESS_ID NUM_PROCESSES PORT [REF_NPZ]

It trains a tiny hard-parameter-sharing MLP with PCGrad (a PRNG key in its
state; MGDA when multi-process) and Adam; batch ``i`` is a pure function of the data position ``i``,
which is saved in the checkpoint's ``extra``. It prints ``resumed <step>`` or
``fresh``, then ``step <i>`` after each step (flushed), and writes the final
parameters to OUT_NPZ (process 0). With PROCESS_ID/NUM_PROCESSES/PORT it runs
data-parallel over ``jax.distributed`` processes (CPU, gloo collectives) with a
``HEARTBEAT_S``-second heartbeat timeout; with REF_NPZ the same processes then
also train from scratch without checkpoints (an uninterrupted run, reusing the
compiled step) and write those parameters to REF_NPZ.
"""

import os
import sys
import time

# The coordination service's heartbeat timeout; the test shortens it for the kill phase
# and lengthens it for the restart, so that a CPU-starved CI machine does not look dead.
HEARTBEAT_S = int(os.environ.get("MTL_TEST_HEARTBEAT_S", "10"))
MULTI = __name__ == "__main__" and len(sys.argv) > 6
if MULTI:
    from xla_flags import set_cpu_device_count

    set_cpu_device_count(1)
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if MULTI:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

NUM_TASKS, BATCH, IN_DIM, OUT_DIM = 3, 8, 6, 2


def batch_at(position: int):
    """The batch at data position ``position`` (a pure function of it)."""
    rng = np.random.default_rng([1234, position])
    x = rng.normal(size=(BATCH, IN_DIM)).astype(np.float32)
    teacher = np.random.default_rng(99).normal(size=(NUM_TASKS, IN_DIM, OUT_DIM))
    y = np.einsum("bi,kio->bko", x, teacher).astype(np.float32)
    return x, y


def make(mesh=None):
    """Returns ``(initial TrainState, TrainStep)``."""
    import mtl_jax as mtl

    model = mtl.models.mlp_hps(NUM_TASKS, hidden=8, out=OUT_DIM)
    params = model.init(jax.random.key(0), jnp.zeros((1, IN_DIM)))

    def loss_fn(p, b):
        x, y = b
        pred = model.apply(p, x)  # [K, B, out]
        return jnp.mean((pred - jnp.moveaxis(y, 1, 0)) ** 2, axis=(1, 2))

    # Multi-process: MGDA, since the step's replicated init cannot yet place PCGrad's typed
    # PRNG key on a sharding that spans processes (jax.device_put refuses it).
    balancer = mtl.balancers.pcgrad(seed=0) if mesh is None else mtl.balancers.mgda()
    step = mtl.training.make_train_step(loss_fn, balancer, optax.adam(1e-2), mesh=mesh)
    return step.init(params), step


def train(num_steps, *, ckpt=None, delay=0.0, mesh=None, report=None):
    """Trains to ``num_steps``, resuming from and saving to ``ckpt`` if given."""
    import mtl_jax as mtl

    state, step = make(mesh)
    position = 0
    if ckpt is not None:
        restored = ckpt.restore_latest(state)
        if restored is not None:
            state, extra = restored
            position = extra["data_position"]
    if report:
        report("fresh" if position == 0 else f"resumed {position}")
    while position < num_steps:
        batch = batch_at(position)
        if mesh is not None:
            n = BATCH // jax.process_count()
            lo = jax.process_index() * n
            batch = mtl.training.shard_batch(tuple(b[lo : lo + n] for b in batch), mesh)
        state, _ = step(state, batch)
        position += 1
        if ckpt is not None:
            ckpt.save(position, state, extra={"data_position": position})
        if report:
            report(f"step {position}")
        time.sleep(delay)
    if ckpt is not None:
        ckpt.save(position, state, extra={"data_position": position}, force=True)
    return state


def main() -> None:
    directory, num_steps, save_every, out = sys.argv[1:5]
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    mesh = None
    if MULTI:
        pid, nproc, port = (int(a) for a in sys.argv[6:9])
        jax.distributed.initialize(
            f"127.0.0.1:{port}",
            num_processes=nproc,
            process_id=pid,
            heartbeat_timeout_seconds=HEARTBEAT_S,
            shutdown_timeout_seconds=HEARTBEAT_S,
        )
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
    import mtl_jax as mtl

    with mtl.training.Checkpointer(directory, save_every=int(save_every), keep=2) as ckpt:
        state = train(
            int(num_steps), ckpt=ckpt, delay=delay, mesh=mesh, report=lambda s: print(s, flush=True)
        )
    runs = [(out, state)]
    if len(sys.argv) > 9:
        runs.append((sys.argv[9], train(int(num_steps), mesh=mesh)))
    for path, final in runs:
        leaves = [
            np.asarray(x.addressable_data(0)) for x in jax.tree_util.tree_leaves(final.params)
        ]
        if jax.process_index() == 0:
            np.savez(path, *leaves)
    print("done", flush=True)
    if MULTI:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
