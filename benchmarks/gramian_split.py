"""The Gramian route split at the shared representation, against the unsplit one, interleaved.

Written as a prototype of the split; the Gramian route now splits by itself
(``make_train_step(..., representation=Representation(..., decode_tasks=...))``
with a Gram balancer; see ``mtl_jax/training/_gramian.py``). The rows:
``gramian (split route)``, the route with the workload's representation;
``gramian (unsplit)``, the same step without it; ``split (prototype)``, this
script's hand-built step. The unsplit route takes each task's gradient of the shared
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
it, interleaved round by round, with equal weighting, the Gramian route split and
unsplit, representation mode and torchjd; it first checks that the split
prototype's and the split route's gradients equal the unsplit route's (SGD with
learning rate 1, one step).

Usage::

    python -m benchmarks.gramian_split --methods mgda,upgrad,pcgrad --rounds 9
    python -m benchmarks.gramian_split --workload w1 --methods mgda --rounds 5 --inner 2 \
        --no-prototype
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
from benchmarks import runners, torch_workloads, workloads
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


def _route_step(wl, balancer, tx, *, split: bool):
    """The Gramian route's step, split (with the workload's representation) or not."""
    rep = wl.representation if split else None
    return mtl.training.make_train_step(
        wl.loss_fn, balancer, tx, mode="gramian", representation=rep
    )


def check(wl: workloads.Workload, name: str, *, prototype: bool = True) -> tuple[float, float]:
    """Max relative difference of one SGD(1) step's gradients against the unsplit route.

    Returns ``(prototype, split route)`` (``nan`` for the prototype when skipped).
    """
    balancer = runners.make_balancer(name, wl.num_tasks, wl.shared)
    if prototype:
        step, state = split_step(wl, balancer, optax.sgd(1.0))
        proto = step(state, wl.batch)[0]
    routed = []
    for split in (True, False):
        ref = _route_step(wl, balancer, optax.sgd(1.0), split=split)
        routed.append(ref.step(ref.init(wl.params), wl.batch)[0].params)

    def err(ours, ref_params):
        e = 0.0
        for a, b, p in zip(*(jax.tree_util.tree_leaves(t) for t in (ours, ref_params, wl.params))):
            da, db = np.asarray(a - p, np.float64), np.asarray(b - p, np.float64)
            e = max(e, float(np.max(np.abs(da - db)) / np.max(np.abs(db))))
        return e

    return err(proto, routed[1]) if prototype else float("nan"), err(routed[0], routed[1])


def _runner(step, wl):
    holder = [step.init(wl.params)]
    compiled = step.step.lower(holder[0], wl.batch).compile()

    def run():
        holder[0], metrics = compiled(holder[0], wl.batch)
        return jax.block_until_ready((holder[0], metrics))

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="w2", choices=["w1", "w2"])
    p.add_argument("--num-tasks", type=int, default=10)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument(
        "--no-prototype",
        action="store_true",
        help="skip the hand-built step (its lax.map loop takes ~40 s a step on W1's convs)",
    )
    p.add_argument("--methods", default="mgda,upgrad,pcgrad")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=10, help="steps per timed sample")
    p.add_argument("--torch-threads", type=int, default=1)
    a = p.parse_args(argv)
    make = workloads.gradnorm_toy if a.workload == "w2" else workloads.conv_hps
    wl = make(a.num_tasks)
    methods = [m for m in a.methods.split(",") if m]
    runs = {}

    def add(label, run_fn):
        runs[label] = run_fn

    run, _, _ = runners.train_runner(wl, "equal_weighting", "loss")
    add("equal_weighting loss", run)
    for name in methods:
        e_proto, e_route = check(wl, name, prototype=not a.no_prototype)
        print(
            f"{name}: max rel. gradient difference against the unsplit route: "
            f"prototype {e_proto:.1e}, split route {e_route:.1e}"
        )
        balancer = runners.make_balancer(name, wl.num_tasks, wl.shared)
        for split in (True, False):
            step = _route_step(wl, balancer, optax.adam(1e-3), split=split)
            add(f"{name} gramian ({'split route' if split else 'unsplit'})", _runner(step, wl))
        run, _, _ = runners.train_runner(wl, name, "representation")
        add(f"{name} representation", run)
        if a.no_prototype:
            continue
        step, state = split_step(wl, balancer, optax.adam(1e-3))
        compiled = step.lower(state, wl.batch).compile()
        holder = [state]

        def run_split(c=compiled, h=holder):
            h[0] = jax.block_until_ready(c(h[0], wl.batch))

        add(f"{name} split (prototype)", run_split)
    try:
        if a.no_torch:
            raise ImportError
        import torch

        torch.set_num_threads(a.torch_threads)
        for name in ["equal_weighting", *methods]:
            run = torch_workloads.train_step(a.workload, wl.batch, wl.num_tasks, name)
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
        f"{wl.name}, {a.rounds} interleaved rounds x {a.inner} steps; "
        f"load {load0} -> {os.getloadavg()}"
    )
    print("| run | median ms | × our EW |\n|---|---:|---:|")
    for label, t in times.items():
        ms = statistics.median(t)
        print(f"| {label} | {ms:.2f} | {ms / ew:.2f} |")


if __name__ == "__main__":
    main()
