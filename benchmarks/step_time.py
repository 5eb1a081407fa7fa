"""Times the full jitted training step of any balancer, as a ratio to equal weighting.

One step = per-task losses, the gradient information the balancer needs, the
balancer, Adam (lr 1e-3) and the parameter update, in one jitted function
(:func:`mtl_jax.training.make_train_step`). Loss-only balancers run the
single-backward route (``"loss"``); Gram and Jacobian balancers run
``"jacobian"`` (full-parameter task Jacobian over the shared encoder) and, where
they allow it, ``"representation"``. W3 times the balancer alone, from a given
task Jacobian to the combined update.

Timing: every configuration is compiled and warmed up first; then the timed
steps of all methods of one configuration are *interleaved* (one step of each
method per round) so that load changes on a shared machine hit all methods
alike. Each step ends with ``jax.block_until_ready``; the table reports the
median and its ratio to equal weighting's median in the same run.

Usage (from the repository root)::

    python -m benchmarks.step_time --methods dwa,famo --workloads w1,w2 --num-tasks 2,10,40
    python -m benchmarks.step_time --quick            # seconds, for smoke tests

See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
import typing
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import optax

import mtl_jax as mtl

try:
    from benchmarks import torch_workloads, workloads
except ImportError:  # run as a script: python benchmarks/step_time.py
    import torch_workloads
    import workloads

BASELINE = "equal_weighting"
LOSS_METHODS = ("uncertainty_weighting", "dwa", "rlw", "gls", "stch", "famo", "db_mtl")
ALIASES = {"ew": "equal_weighting", "uw": "uncertainty_weighting"}


def all_methods() -> list[str]:
    """Every balancer of :data:`mtl_jax.balancers.METHODS` a plain training step can time.

    The bilevel methods (Auto-Lambda) are left out: their cost is a separate
    look-ahead on a validation batch, which these single-batch steps do not take.
    """
    return [n for n, info in mtl.balancers.METHODS.items() if info.cost != "bilevel"]


def make_balancer(name: str, num_tasks: int, shared: Any) -> mtl.balancers.Balancer:
    """``mtl.balancers.make(name, ...)`` with default hyperparameters for ``num_tasks`` tasks.

    Gram / Jacobian methods balance the encoder only (heads get their plain sum);
    loss-only methods weight every leaf, which keeps them on the one-VJP route.
    """
    kind = mtl.balancers.make(name, num_tasks=num_tasks).spec.kind
    return mtl.balancers.make(name, num_tasks=num_tasks, shared=None if kind == "loss" else shared)


def train_modes() -> list[str]:
    """The modes :func:`mtl_jax.training.make_train_step` declares, ``"auto"`` excluded."""
    hint = typing.get_type_hints(mtl.training.make_train_step)["mode"]
    return [m for m in typing.get_args(hint) if m != "auto"]


def modes_for(balancer: mtl.balancers.Balancer, wl: workloads.Workload | None = None) -> list[str]:
    """Every mode ``make_train_step`` accepts for ``balancer`` (on ``wl``'s model).

    Loss-only balancers run only ``"loss"`` (their other routes compute the same
    update at a Jacobian's cost); the others run every other mode that
    ``make_train_step`` accepts for them, so a mode added there shows up here by
    itself. Without ``wl``, a placeholder representation stands in (the factory
    checks modes eagerly, without tracing).
    """
    if balancer.spec.kind == "loss":
        return ["loss"]
    if wl is None:
        loss_fn = lambda p, b: p
        rep = mtl.training.Representation(lambda p, b: p, lambda p, z, b: z)
    else:
        loss_fn, rep = wl.loss_fn, wl.representation
    ok = []
    for mode in train_modes():
        if mode == "loss":
            continue
        try:
            mtl.training.make_train_step(
                loss_fn, balancer, optax.adam(1e-3), mode=mode, representation=rep
            )
        except (ValueError, TypeError, NotImplementedError):
            continue
        ok.append(mode)
    return ok


class Row(NamedTuple):
    workload: str
    num_tasks: int
    method: str
    mode: str
    median_ms: float
    ratio: float
    temp_mb: float
    mflop: float
    note: str


class _Runner(NamedTuple):
    method: str
    mode: str
    run: Callable[[], Any]  # one step, blocked
    temp_mb: float
    mflop: float


def _compile(jitted, *args) -> tuple[Callable, float, float]:
    """Compiles once; returns the executable, XLA's temp-buffer MiB and its MFLOP estimate."""
    compiled = jitted.lower(*args).compile()
    try:
        temp = float(compiled.memory_analysis().temp_size_in_bytes) / 2**20
    except Exception:  # memory_analysis is backend dependent
        temp = float("nan")
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        mflop = float(cost["flops"]) / 1e6
    except Exception:  # cost_analysis is backend dependent
        mflop = float("nan")
    return compiled, temp, mflop


def _train_runner(wl: workloads.Workload, name: str, mode: str, chunk_size: int | None):
    balancer = make_balancer(name, wl.num_tasks, wl.shared)
    step = mtl.training.make_train_step(
        wl.loss_fn,
        balancer,
        optax.adam(1e-3),
        mode=mode,
        representation=wl.representation,
        chunk_size=chunk_size,
    )
    holder = [step.init(wl.params)]
    compiled, temp, mflop = _compile(step.step, holder[0], wl.batch)

    def run():
        holder[0], metrics = compiled(holder[0], wl.batch)
        return jax.block_until_ready((holder[0], metrics))

    return run, temp, mflop


def _aggregator_runner(agg: workloads.Aggregator, name: str):
    balancer = make_balancer(name, agg.num_tasks, None)
    holder = [balancer.init({"w": agg.jac["w"][0]})]
    update = jax.jit(lambda j, s, losses: balancer.update(j, s, task_losses=losses))
    compiled, temp, mflop = _compile(update, agg.jac, holder[0], agg.losses)

    def run():
        out, holder[0] = compiled(agg.jac, holder[0], agg.losses)
        return jax.block_until_ready((out, holder[0]))

    return run, temp, mflop


def _torchjd_runner(agg: workloads.Aggregator, name: str):
    """One torchjd aggregation of the W3 Jacobian (a torch tensor sharing its values)."""
    import numpy as np
    import torch

    jac = torch.from_numpy(np.array(agg.jac["w"]))  # a writable copy
    aggregator = torch_workloads.aggregator(name, agg.num_tasks, workload="w3")

    def run():
        return aggregator(jac)

    return run, float("nan"), float("nan")


def _time_config(
    label: str,
    k: int,
    runners: Sequence[_Runner],
    errors: dict,
    steps: int,
    warmup: int,
    min_sample_ms: float,
) -> list[Row]:
    warm: dict[tuple[str, str], float] = {}
    for r in runners:
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            r.run()
            warm[(r.method, r.mode)] = 1e3 * (time.perf_counter() - t0)
    # Cheap steps (W2, W3) are repeated inside one sample so that a sample lasts at
    # least min_sample_ms; the same count for every method keeps the ratios fair.
    fastest = min(warm.values(), default=1.0)
    inner = max(1, math.ceil(min_sample_ms / max(fastest, 1e-3)))
    times: dict[tuple[str, str], list[float]] = {(r.method, r.mode): [] for r in runners}
    for _ in range(steps):
        for r in runners:
            t0 = time.perf_counter()
            for _ in range(inner):
                r.run()
            times[(r.method, r.mode)].append(1e3 * (time.perf_counter() - t0) / inner)
    med = {key: statistics.median(v) for key, v in times.items()}
    base = [v for (m, _), v in med.items() if m == BASELINE]
    base_ms = base[0] if base else float("nan")
    rows = [
        Row(
            label,
            k,
            r.method,
            r.mode,
            med[(r.method, r.mode)],
            med[(r.method, r.mode)] / base_ms,
            r.temp_mb,
            r.mflop,
            "",
        )
        for r in runners
    ]
    for (method, mode), msg in errors.items():
        nan = float("nan")
        rows.append(Row(label, k, method, mode, nan, nan, nan, nan, msg))
    return rows


def _build(make_runner, methods, modes_filter, label, verbose):
    runners, errors = [], {}
    for name in methods:
        try:
            probe = make_balancer(name, 2, None)
        except Exception as e:  # not implemented yet, or needs arguments
            errors[(name, "-")] = f"{type(e).__name__}: {e}"[:120]
            continue
        for mode in make_runner.modes(probe):
            if modes_filter and mode not in modes_filter:
                continue
            if verbose:
                print(f"  compiling {label} {name} [{mode}]", file=sys.stderr, flush=True)
            try:
                run, temp, mflop = make_runner(name, mode)
                runners.append(_Runner(name, mode, run, temp, mflop))
            except Exception as e:
                errors[(name, mode)] = f"{type(e).__name__}: {e}"[:120]
    return runners, errors


def benchmark(
    methods: Sequence[str],
    workload_names: Sequence[str],
    num_tasks: Sequence[int],
    *,
    steps: int = 10,
    warmup: int = 2,
    quick: bool = False,
    modes: Sequence[str] = (),
    chunk_size: int | None = None,
    w2_tasks: int = 10,
    min_sample_ms: float = 50.0,
    verbose: bool = True,
    torchjd: bool = False,
) -> list[Row]:
    """Runs the requested configurations; equal weighting is always included.

    With ``torchjd=True``, W3 also times torchjd's aggregator of each method that has
    one (rows of mode ``"torchjd"``) on the same Jacobian, interleaved with ours.
    """
    methods = [BASELINE, *[m for m in methods if m != BASELINE]]
    rows: list[Row] = []
    for wname in workload_names:
        if wname == "w3":
            ks = [k for k in num_tasks if k > 2] or list(num_tasks)
        elif wname == "w2":
            ks = [w2_tasks]
        else:
            ks = list(num_tasks)
        for k in ks:
            if wname == "w1":
                wl = workloads.conv_hps(k, batch_size=8 if quick else 64)
            elif wname == "w2":
                wl = workloads.gradnorm_toy(k)
            elif wname == "w3":
                wl = workloads.aggregator(k, dim=10_000 if quick else 1_000_000)
            else:
                raise ValueError(f"unknown workload {wname!r} (w1, w2, w3)")
            if wname == "w3":
                make_runner = lambda name, mode, wl=wl: _aggregator_runner(wl, name)
                make_runner.modes = lambda b: ["aggregate"]
            else:
                make_runner = lambda name, mode, wl=wl: _train_runner(wl, name, mode, chunk_size)
                make_runner.modes = modes_for
            runners, errors = _build(make_runner, methods, modes, wl.name, verbose)
            if wname == "w3" and torchjd:
                for name in methods:
                    if name != BASELINE and name not in torch_workloads.AGGREGATORS:
                        continue
                    try:
                        run, temp, mflop = _torchjd_runner(wl, name)
                        runners.append(_Runner(name, "torchjd", run, temp, mflop))
                    except Exception as e:  # torch / torchjd missing
                        errors[(name, "torchjd")] = f"{type(e).__name__}: {e}"[:120]
            if verbose:
                print(f"  timing {wl.name}: {len(runners)} runs x {steps} steps", file=sys.stderr)
            rows += _time_config(wl.name, k, runners, errors, steps, warmup, min_sample_ms)
    return rows


def to_markdown(rows: Sequence[Row]) -> str:
    lines = [
        "| workload | method | mode | median ms/step | × EW | XLA temp MB | XLA MFLOP |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.note:
            lines.append(f"| {r.workload} | {r.method} | {r.mode} | failed: {r.note} | | | |")
            continue
        lines.append(
            f"| {r.workload} | {r.method} | {r.mode} | {r.median_ms:.1f} | {r.ratio:.2f} | "
            f"{r.temp_mb:.1f} | {r.mflop:.1f} |"
        )
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(Row._fields)
        w.writerows(rows)


def plot(rows: Sequence[Row], path: str) -> None:
    """Step time against K on W1, one line per (method, mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.workload.startswith("W1") and not r.note:
            series.setdefault(f"{r.method} [{r.mode}]", []).append((r.num_tasks, r.median_ms))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("number of tasks K")
    ax.set_ylabel("median ms / step")
    ax.set_yscale("log")
    ax.set_title("W1 conv-hps step time")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _csv_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--methods",
        default="loss",
        help="comma list of balancer names; 'loss' = the loss weightings, 'all'",
    )
    p.add_argument("--workloads", default="w1,w2", help="comma list of w1, w2, w3")
    p.add_argument("--num-tasks", default="2,10,40", help="K values for W1 (and W3)")
    p.add_argument("--w2-tasks", type=int, default=10, help="K for W2")
    p.add_argument("--modes", default="", help="restrict to these modes (loss, jacobian, ...)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument(
        "--min-sample-ms",
        type=float,
        default=50.0,
        help="repeat cheap steps inside one timed sample until it lasts this long",
    )
    p.add_argument("--chunk-size", type=int, default=None, help="tasks per Jacobian chunk")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny W1 batch and W3 size, 2 steps, W2 only unless --workloads is given",
    )
    p.add_argument("--out-md", default=None, help="write the markdown table here")
    p.add_argument("--out-csv", default=None, help="write a CSV here")
    p.add_argument("--plot", default=None, help="write a step-time-vs-K plot (PNG) here")
    p.add_argument(
        "--torchjd",
        action="store_true",
        help="W3: also time torchjd's aggregators on the same Jacobian, in the same run",
    )
    p.add_argument("--quiet", action="store_true")
    args = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(args)
    explicit = any(x.startswith("--workloads") for x in args)
    if a.methods == "all":
        methods = all_methods()
    elif a.methods == "loss":
        methods = list(LOSS_METHODS)
    else:
        methods = [ALIASES.get(m, m) for m in _csv_list(a.methods)]
    wls = _csv_list(a.workloads)
    steps, warmup = a.steps, a.warmup
    if a.quick:
        steps, warmup = min(steps, 2), min(warmup, 1)
        if not explicit:
            wls = ["w2"]
    ks = [int(k) for k in _csv_list(a.num_tasks)]
    if a.quick and not any(x.startswith("--num-tasks") for x in args):
        ks = ks[:1]
    rows = benchmark(
        methods,
        wls,
        ks,
        steps=steps,
        warmup=warmup,
        quick=a.quick,
        modes=_csv_list(a.modes),
        chunk_size=a.chunk_size,
        w2_tasks=a.w2_tasks,
        min_sample_ms=0.0 if a.quick else a.min_sample_ms,
        verbose=not a.quiet,
        torchjd=a.torchjd,
    )
    table = to_markdown(rows)
    header = (
        f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({jax.device_count()} device(s)); median of {steps} steps after {warmup} warm-up"
    )
    print(header + "\n\n" + table)
    if a.out_md:
        with open(a.out_md, "w") as f:
            f.write(header + "\n\n" + table + "\n")
    if a.out_csv:
        write_csv(rows, a.out_csv)
    if a.plot:
        plot(rows, a.plot)
    return rows


if __name__ == "__main__":
    main()
