"""W2: the Gramian route split at the shared representation, against today's, interleaved.

A measurement for the training route (``mtl_jax/training/_gramian.py`` is not
changed here). Today's Gramian route takes each task's gradient of the shared
leaves by a VJP of the *whole* loss with a one-hot cotangent ``e_k``: every such
VJP runs backward through all ``K`` heads (zeros included), so the heads'
backward is paid ``K`` times, plus one more VJP of ``Σ_k L_k`` for the heads'
plain-sum gradients. When the model gives :class:`mtl_jax.training.Representation`
with ``decode_tasks``, the same update needs

1. the forward pass, and one VJP of ``decode_tasks`` with cotangent ``1``: the
   heads' plain-sum gradients *and* every ``∂L_k/∂z`` (one backward through the
   heads, as representation mode);
2. ``K`` VJPs of the encoder alone with cotangents ``∂L_k/∂z`` (``lax.map``, one
   at a time, or ``vmap``): the per-task Jacobian of the shared leaves;
3. ``G = J Jᵀ``, ``w = f(G)``, ``Σ_k w_k J_k``.

This script builds that step by hand (Adam, lr 1e-3, as the benchmark) and times
it, interleaved round by round, with equal weighting, today's Gramian route,
representation mode and torchjd; it first checks that the split step's
gradients equal the Gramian route's (SGD with learning rate 1, one step).

Usage::

    python -m benchmarks.gramian_split --methods mgda,upgrad,pcgrad --rounds 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_jax as mtl
from benchmarks import step_time, torch_workloads, workloads
from mtl_jax import _task_tree


def split_step(wl: workloads.Workload, balancer, tx, *, vmapped: bool = False):
    """The split Gramian route's jitted ``step(state, batch)``, ``state = (params, opt, bal)``."""
    rep = wl.representation
    if rep.decode_tasks is None:
        raise ValueError("the split route needs Representation.decode_tasks")
    k = wl.num_tasks
    flags = jax.tree_util.tree_leaves(wl.shared)

    def grads(params, bal_state, batch):
        z, enc_vjp = jax.vjp(lambda p: rep.encode(p, batch), params)
        zs = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (k, *a.shape)), z)
        losses, dec_vjp = jax.vjp(lambda p, zs: rep.decode_tasks(p, zs, batch), params, zs)
        g_heads, dzs = dec_vjp(jnp.ones_like(losses))

        def rows(c):
            leaves = jax.tree_util.tree_leaves(enc_vjp(c)[0])
            return [x for x, s in zip(leaves, flags) if s]

        jac = jax.vmap(rows)(dzs) if vmapped else jax.lax.map(rows, dzs)
        g = _task_tree.gram(jac)
        w, bal_state = balancer.spec.gram_weights(g, jax.lax.stop_gradient(losses), bal_state)
        update = iter(_task_tree.combine(w, jac))
        out = [next(update) if s else x for x, s in zip(jax.tree_util.tree_leaves(g_heads), flags)]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), out), bal_state

    def step(state, batch):
        params, opt, bal = state
        g, bal = grads(params, bal, batch)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, bal

    init = (wl.params, tx.init(wl.params), balancer.init(wl.params))
    return jax.jit(step), init


def check(wl: workloads.Workload, name: str) -> float:
    """Max relative difference of one SGD(1) step's gradients: split vs the Gramian route."""
    balancer = step_time.make_balancer(name, wl.num_tasks, wl.shared)
    step, state = split_step(wl, balancer, optax.sgd(1.0))
    ours = step(state, wl.batch)[0]
    ref = mtl.training.make_train_step(wl.loss_fn, balancer, optax.sgd(1.0), mode="gramian")
    ref_params = jax.jit(ref.step)(ref.init(wl.params), wl.batch)[0].params
    err = 0.0
    for a, b, p in zip(*(jax.tree_util.tree_leaves(t) for t in (ours, ref_params, wl.params))):
        da, db = np.asarray(a - p, np.float64), np.asarray(b - p, np.float64)
        err = max(err, float(np.max(np.abs(da - db)) / np.max(np.abs(db))))
    return err


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="mgda,upgrad,pcgrad")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=10, help="steps per timed sample")
    p.add_argument("--torch-threads", type=int, default=1)
    a = p.parse_args(argv)
    wl = workloads.gradnorm_toy(10)
    methods = [m for m in a.methods.split(",") if m]
    runs = {}

    def add(label, run_fn):
        runs[label] = run_fn

    run, _, _ = step_time._train_runner(wl, "equal_weighting", "loss", None)
    add("equal_weighting loss", run)
    for name in methods:
        print(f"{name}: split vs Gramian route, max rel. gradient difference {check(wl, name):.1e}")
        balancer = step_time.make_balancer(name, wl.num_tasks, wl.shared)
        for mode in ("gramian", "representation"):
            run, _, _ = step_time._train_runner(wl, name, mode, None)
            add(f"{name} {mode}", run)
        step, state = split_step(wl, balancer, optax.adam(1e-3))
        compiled = step.lower(state, wl.batch).compile()
        holder = [state]

        def run_split(c=compiled, h=holder):
            h[0] = jax.block_until_ready(c(h[0], wl.batch))

        add(f"{name} split (prototype)", run_split)
    try:
        import torch

        torch.set_num_threads(a.torch_threads)
        for name in ["equal_weighting", *methods]:
            run = torch_workloads.train_step("w2", wl.batch, wl.num_tasks, name)
            if run is not None:
                add(f"{name} torchjd", run)
    except ImportError:
        pass
    load0 = os.getloadavg()
    for run in runs.values():
        run()
        run()
    times = {label: [] for label in runs}
    for _ in range(a.rounds):
        for label, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(a.inner):
                run()
            times[label].append(1e3 * (time.perf_counter() - t0) / a.inner)
    ew = statistics.median(times["equal_weighting loss"])
    print(
        f"W2 K=10, {a.rounds} interleaved rounds x {a.inner} steps; "
        f"load {load0} -> {os.getloadavg()}"
    )
    print("| run | median ms | × our EW |\n|---|---:|---:|")
    for label, t in times.items():
        ms = statistics.median(t)
        print(f"| {label} | {ms:.2f} | {ms / ew:.2f} |")


if __name__ == "__main__":
    main()
