"""W3 at the memory bound: ``G = J Jᵀ`` layouts on one ``[K, P]`` Jacobian, interleaved.

Times, in one process and interleaved round by round (so machine load hits all
alike), the ways of computing the Gram matrix and the task-axis sums that W3's
methods are made of, and prints median ms and GFLOP/s (``2 K² P`` FLOPs for the
Gram matrix, ``2 K P`` for a sum):

* ``dot``: one ``lax.dot_general`` ``[K, P] × [P, K]`` (what XLA does by default);
* ``scan8192``: one ``lax.scan`` over 8192-column blocks (the previous ``gram``);
* ``mtl.gram``: the library's current ``gram`` (``GRAM_PARTS`` independent scans over
  ``GRAM_BLOCK``-column blocks on CPU);
* ``mtl.gram sym``: the same with ``symmetric=True`` (only the blocks on and above
  the diagonal, ≈ 3/4 of the FLOPs, mirrored; GFLOP/s below count the full ``2 K² P``);
* ``scan<b>x<p>``: ``p`` independent scans over ``b``-column blocks;
* ``sum_axis0`` / ``ones_dot``: ``jnp.sum(J, 0)`` against ``1ᵀ J`` (``mtl.sum_tasks``);
* ``torch``: PyTorch's ``J @ J.T`` and ``J.sum(0)`` on the same values, if installed.

Usage::

    python -m benchmarks.gram_layouts --num-tasks 10,40 --dim 1000000 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import mtl_jax as mtl
from mtl_jax import _task_tree


def _scan(block: int, parts: int):
    return lambda x: _task_tree._blocked_gram(x, block, parts)


def candidates() -> dict:
    dot = lambda x: _task_tree._dot_nt(x, x)
    out = {"dot": dot, "scan8192": _scan(8192, 1), "mtl.gram": lambda x: mtl.gram({"w": x})}
    out["mtl.gram sym"] = lambda x: mtl.gram({"w": x}, symmetric=True)
    for block, parts in ((2048, 2), (4096, 2), (4096, 4), (8192, 2)):
        out[f"scan{block}x{parts}"] = _scan(block, parts)
    out["sum_axis0"] = lambda x: jnp.sum(x, axis=0)
    out["ones_dot"] = lambda x: mtl.sum_tasks({"w": x})["w"]
    return out


def run(k: int, dim: int, rounds: int) -> list[tuple[str, float, float]]:
    """``(name, median ms, GFLOP/s)`` for every candidate on one ``[k, dim]`` J."""
    jac = jax.random.normal(jax.random.key(0), (k, dim), jnp.float32)
    fns = {}
    for name, f in candidates().items():
        fns[name] = jax.jit(f).lower(jac).compile()
    ref = np.asarray(jac, np.float64)
    g_ref = ref @ ref.T
    err = {
        n: float(np.max(np.abs(np.asarray(fns[n](jac)) - g_ref)) / np.max(np.abs(g_ref)))
        for n in fns
        if "sum" not in n and "ones" not in n
    }
    try:
        import torch

        tj = torch.from_numpy(np.array(jac))
        fns["torch J@J.T"] = lambda _: tj @ tj.T
        fns["torch J.sum(0)"] = lambda _: tj.sum(0)
    except ImportError:
        pass
    for f in fns.values():
        jax.block_until_ready(f(jac))
    times = {n: [] for n in fns}
    for _ in range(rounds):
        for n, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(jac))
            times[n].append(1e3 * (time.perf_counter() - t0))
    rows = []
    for n in fns:
        ms = statistics.median(times[n])
        flops = 2 * k * dim * (1 if ("sum" in n or "ones" in n) else k)
        rows.append((n, ms, flops / ms / 1e6, err.get(n, float("nan"))))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-tasks", default="10,40")
    p.add_argument("--dim", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args(argv)
    print(
        f"GRAM_BLOCK={_task_tree.GRAM_BLOCK} GRAM_PARTS={_task_tree.GRAM_PARTS} "
        f"GRAM_SYM_MIN_TASKS={_task_tree.GRAM_SYM_MIN_TASKS} load={os.getloadavg()}"
    )
    print("| K | variant | median ms | GFLOP/s | max rel. error vs float64 |")
    print("|---:|---|---:|---:|---:|")
    for k in (int(x) for x in a.num_tasks.split(",")):
        for name, ms, gflops, e in run(k, a.dim, a.rounds):
            es = "" if np.isnan(e) else f"{e:.1e}"
            print(f"| {k} | {name} | {ms:.1f} | {gflops:.1f} | {es} |", flush=True)
    print(f"load={os.getloadavg()}")


if __name__ == "__main__":
    main()
