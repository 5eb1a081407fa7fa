"""One command for the whole benchmark: ``python -m benchmarks``.

Runs W1 (conv-hps, K = 2, 10, 40, every training mode each balancer allows), W2
(gradnorm-toy) and W3 (the balancer alone on a ``[K, 10⁶]`` Jacobian) for every
balancer, and the same workloads through torchjd in the same run where torchjd has
the method; writes ``results.json``, ``results.md`` (ours / torchjd / LibMTL and
their ratios, XLA temp memory, peak RSS) and PNGs of step time and memory against
K into ``--out``.

Examples (from the repository root)::

    python -m benchmarks --out bench_out                       # everything (long)
    python -m benchmarks --methods mgda,upgrad --workloads w1 --num-tasks 10,40
    python -m benchmarks --quick --out /tmp/b                  # seconds
    python -m benchmarks --device gpu --out gpu_out            # on an accelerator

See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

import mtl_jax as mtl
from benchmarks import step_time, torch_workloads, workloads

BASELINE = step_time.BASELINE
PEERS_MD = pathlib.Path(__file__).with_name("PEERS.md")
# PEERS.md's method labels -> mtl_jax balancer names.
PEER_NAMES = {
    "EW / Mean": "equal_weighting",
    "UW": "uncertainty_weighting",
    "DWA": "dwa",
    "RLW": "rlw",
    "GLS": "gls",
    "STCH": "stch",
    "FAMO": "famo",
    "DB-MTL": "db_mtl",
    "GradNorm": "gradnorm",
    "MGDA": "mgda",
    "PCGrad": "pcgrad",
    "GradVac": "gradvac",
    "IMTL": "imtl",
    "CAGrad": "cagrad",
    "Nash-MTL": "nash_mtl",
    "Aligned-MTL": "aligned_mtl",
    "UPGrad": "upgrad",
    "DualProj": "dualproj",
    "GradDrop": "graddrop",
    "FairGrad": "fairgrad",
}
PRECISIONS = {"f32": None, "bf16": "bfloat16"}


@dataclasses.dataclass
class Result:
    """One timed configuration: a method on a workload, in one mode and precision."""

    workload: str  # "w1" | "w2" | "w3"
    num_tasks: int
    method: str
    mode: str  # a make_train_step mode, "aggregate" (W3) or "torchjd"
    precision: str  # "f32" | "bf16"
    framework: str  # "mtl_jax" | "torchjd"
    median_ms: float = math.nan
    ratio_ew: float = math.nan  # to our f32 equal weighting, same workload and K, same run
    xla_temp_mb: float = math.nan
    xla_mflop: float = math.nan
    peak_rss_mb: float = math.nan  # process peak RSS during this method's warm-up step
    steps: int = 0
    note: str = ""


# ---------------------------------------------------------------------------- memory


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark of this process (Linux ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(since_reset: bool) -> float:
    """Peak resident set size in MiB: ``VmHWM`` after a reset, else ``getrusage``."""
    if since_reset:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return float(line.split()[1]) / 1024
        except OSError:
            pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


train_modes = step_time.train_modes
modes_for = step_time.modes_for


# ---------------------------------------------------------------------------- runners


@dataclasses.dataclass
class _Runner:
    result: Result
    run: Callable[[], Any]


def _precise(wl: workloads.Workload, precision: str) -> workloads.Workload:
    dtype = PRECISIONS[precision]
    if dtype is None:
        return wl
    mp = lambda f: mtl.training.mixed_precision(f, compute_dtype=dtype)
    rep = mtl.training.Representation(mp(wl.representation.encode), mp(wl.representation.decode))
    return wl._replace(loss_fn=mp(wl.loss_fn), representation=rep)


def _train_runner(wl, name, mode, precision, chunk_size):
    return step_time._train_runner(_precise(wl, precision), name, mode, chunk_size)


def _torchjd_w3_runner(agg: workloads.Aggregator, name: str, device: str):
    import numpy as np
    import torch

    aggregator = torch_workloads.aggregator(name, agg.num_tasks, workload="w3")
    if aggregator is None:
        return None
    jac = torch.from_numpy(np.array(agg.jac["w"])).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run():
        out = aggregator(jac)
        sync()
        return out

    return run


# ---------------------------------------------------------------------------- timing


def _time(runners: Sequence[_Runner], steps: int, min_sample_ms: float) -> None:
    """Warm-up (peak RSS measured here), then interleaved timed rounds; fills results."""
    warm = {}
    for r in runners:
        reset = _reset_peak_rss()
        t0 = time.perf_counter()
        try:
            r.run()
        except Exception as e:  # a failure at run time (e.g. out of memory)
            r.result.note = f"{type(e).__name__}: {e}"[:120]
            continue
        warm[id(r)] = 1e3 * (time.perf_counter() - t0)
        r.result.peak_rss_mb = _peak_rss_mb(reset)
    live = [r for r in runners if id(r) in warm]
    fastest = min(warm.values(), default=1.0)
    inner = max(1, math.ceil(min_sample_ms / max(fastest, 1e-3)))
    samples: dict[int, list[float]] = {id(r): [] for r in live}
    for _ in range(steps):
        for r in live:
            t0 = time.perf_counter()
            for _ in range(inner):
                r.run()
            samples[id(r)].append(1e3 * (time.perf_counter() - t0) / inner)
    for r in live:
        r.result.median_ms = statistics.median(samples[id(r)])
        r.result.steps = steps * inner


def _config(wname: str, k: int, quick: bool):
    if wname == "w1":
        return workloads.conv_hps(k, batch_size=8 if quick else 64)
    if wname == "w2":
        return workloads.gradnorm_toy(k)
    if wname == "w3":
        return workloads.aggregator(k, dim=10_000 if quick else 1_000_000)
    raise ValueError(f"unknown workload {wname!r} (w1, w2, w3)")


def run_benchmark(
    methods: Sequence[str],
    workload_names: Sequence[str],
    num_tasks: Sequence[int],
    *,
    w2_tasks: int = 10,
    modes: Sequence[str] = (),
    precisions: Sequence[str] = ("f32",),
    low_precision_methods: Sequence[str] = (),
    steps: int = 5,
    min_sample_ms: float = 50.0,
    chunk_size: int | None = None,
    torchjd: bool = True,
    torch_device: str = "cpu",
    quick: bool = False,
    budget_s: float | None = None,
    log: Callable[[str], None] = lambda s: None,
    checkpoint: Callable[[list[Result]], Any] | None = None,
) -> list[Result]:
    """Builds, warms up and times every configuration; returns one :class:`Result` each.

    Equal weighting is always included (the ``× EW`` baseline). Within one workload
    and ``K`` all runs (ours and torchjd's) are interleaved round by round.
    ``precisions`` other than ``"f32"`` apply to W1/W2 and to ``low_precision_methods``
    only. Once ``budget_s`` has passed, methods and configurations not yet built
    are recorded as skipped (those built are still timed).
    """
    t_start = time.perf_counter()
    methods = [BASELINE, *[m for m in methods if m != BASELINE]]
    results: list[Result] = []
    for wname in workload_names:
        ks = [w2_tasks] if wname == "w2" else list(num_tasks)
        if wname == "w3":
            ks = [k for k in ks if k > 2] or ks
        for k in ks:
            if budget_s is not None and time.perf_counter() - t_start > budget_s:
                results.append(Result(wname, k, "*", "-", "-", "-", note="skipped: time budget"))
                log(f"skipping {wname} K={k}: time budget spent")
                continue
            wl = _config(wname, k, quick)
            runners: list[_Runner] = []
            for name in methods:
                if budget_s is not None and time.perf_counter() - t_start > budget_s:
                    note = "skipped: time budget"
                    results.append(Result(wname, k, name, "-", "-", "-", note=note))
                    continue
                if wname == "w3":
                    jobs = [("aggregate", "f32")]
                else:
                    try:
                        probe = step_time.make_balancer(name, k, wl.shared)
                    except Exception as e:  # not implemented, or needs arguments
                        note = f"{type(e).__name__}: {e}"[:120]
                        results.append(Result(wname, k, name, "-", "f32", "mtl_jax", note=note))
                        continue
                    ms = [m for m in modes_for(probe, wl) if not modes or m in modes]
                    precs = [
                        p
                        for p in precisions
                        if p == "f32" or name in low_precision_methods or name == BASELINE
                    ]
                    jobs = [(m, p) for m in ms for p in precs]
                for mode, prec in jobs:
                    res = Result(wname, k, name, mode, prec, "mtl_jax")
                    log(f"compiling {wname} K={k} {name} [{mode}, {prec}]")
                    try:
                        if wname == "w3":
                            run, temp, mflop = step_time._aggregator_runner(wl, name)
                        else:
                            run, temp, mflop = _train_runner(wl, name, mode, prec, chunk_size)
                    except Exception as e:
                        res.note = f"{type(e).__name__}: {e}"[:120]
                        results.append(res)
                        continue
                    res.xla_temp_mb, res.xla_mflop = temp, mflop
                    runners.append(_Runner(res, run))
                if torchjd and (not modes or "torchjd" in modes):
                    res = Result(wname, k, name, "torchjd", "f32", "torchjd")
                    try:
                        if wname == "w3":
                            run = _torchjd_w3_runner(wl, name, torch_device)
                        else:
                            run = torch_workloads.train_step(wname, wl.batch, k, name, torch_device)
                    except Exception as e:  # torch / torchjd missing or failing
                        res.note = f"{type(e).__name__}: {e}"[:120]
                        results.append(res)
                        run = None
                    if run is not None:
                        runners.append(_Runner(res, run))
            log(f"timing {wname} K={k}: {len(runners)} runs x {steps} rounds")
            _time(runners, steps, min_sample_ms)
            base = [
                r.result.median_ms
                for r in runners
                if r.result.method == BASELINE
                and r.result.framework == "mtl_jax"
                and r.result.precision == "f32"
            ]
            for r in runners:
                r.result.ratio_ew = r.result.median_ms / base[0] if base else math.nan
                results.append(r.result)
            if checkpoint is not None:
                checkpoint(results)
    return results


# ---------------------------------------------------------------------------- peers


def peer_table(path: pathlib.Path = PEERS_MD) -> dict[tuple[str, str, str, int], float]:
    """Parses PEERS.md's peer table: ``(peer, method, workload, K) -> ms``.

    ``peer`` is ``"libmtl"`` or ``"torchjd"``; cells that are empty or "fails" are left out.
    """
    cols = [
        ("libmtl", "w1", 2),
        ("libmtl", "w1", 10),
        ("libmtl", "w1", 40),
        ("libmtl", "w2", 10),
        ("torchjd", "w1", 2),
        ("torchjd", "w1", 10),
        ("torchjd", "w1", 40),
        ("torchjd", "w2", 10),
    ]
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or cells[0] not in PEER_NAMES:
            continue
        for (peer, wname, k), cell in zip(cols, cells[1:]):
            if re.fullmatch(r"[0-9.]+", cell):
                out[(peer, PEER_NAMES[cells[0]], wname, k)] = float(cell)
    return out


# ---------------------------------------------------------------------------- output


def _fmt(x: float, digits: int = 1) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def to_markdown(results: Sequence[Result], peers: dict) -> str:
    """The table: ours, torchjd (this run, else PEERS.md marked †), LibMTL (PEERS.md), ratios."""
    tj = {
        (r.workload, r.num_tasks, r.method): r.median_ms
        for r in results
        if r.framework == "torchjd" and math.isfinite(r.median_ms)
    }
    lines = [
        "| workload | K | method | mode | prec | ours ms | × EW | torchjd ms | torchjd / ours "
        "| LibMTL ms | LibMTL / ours | XLA temp MB | peak RSS MB |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.framework == "torchjd":
            if r.note:
                lines.append(
                    f"| {r.workload} | {r.num_tasks} | {r.method} | torchjd | | | | "
                    f"failed: {r.note} | | | | | |"
                )
            continue
        if r.note:
            lines.append(
                f"| {r.workload} | {r.num_tasks} | {r.method} | {r.mode} | {r.precision} | "
                f"{r.note} | | | | | | | |"
            )
            continue
        key = (r.workload, r.num_tasks, r.method)
        t, mark = tj.get(key), ""
        if t is None:
            t, mark = peers.get(("torchjd", r.method, r.workload, r.num_tasks)), "†"
        lib = peers.get(("libmtl", r.method, r.workload, r.num_tasks))
        t_s = f"{t:.1f}{mark}" if t is not None else ""
        lines.append(
            f"| {r.workload} | {r.num_tasks} | {r.method} | {r.mode} | {r.precision} | "
            f"{_fmt(r.median_ms)} | {_fmt(r.ratio_ew, 2)} | {t_s} | "
            f"{_fmt(t / r.median_ms if t else math.nan, 2)} | {_fmt(lib) if lib else ''} | "
            f"{_fmt(lib / r.median_ms if lib else math.nan, 2)} | {_fmt(r.xla_temp_mb)} | "
            f"{_fmt(r.peak_rss_mb, 0)} |"
        )
    return "\n".join(lines)


def plots(results: Sequence[Result], out_dir: pathlib.Path) -> list[str]:
    """``<w>_time_vs_k.png`` and ``<w>_memory_vs_k.png`` for W1 (else W3, else W2).

    Ours solid (one line per method, mode and precision), torchjd dashed.
    """
    present = {r.workload for r in results if math.isfinite(r.median_ms)}
    wl = next((w for w in ("w1", "w3", "w2") if w in present), None)
    if wl is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(field, framework):
        s: dict[str, list[tuple[int, float]]] = {}
        for r in results:
            v = getattr(r, field)
            if r.workload == wl and r.framework == framework and math.isfinite(v):
                label = (
                    r.method if framework == "torchjd" else f"{r.method} [{r.mode}, {r.precision}]"
                )
                s.setdefault(label, []).append((r.num_tasks, v))
        return s

    written = []
    figs = [
        (f"{wl}_time_vs_k.png", [("median_ms", "median ms / step")], True),
        (
            f"{wl}_memory_vs_k.png",
            [("xla_temp_mb", "XLA temp MB"), ("peak_rss_mb", "peak RSS MB")],
            False,
        ),
    ]
    for fname, panels, with_torchjd in figs:
        fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
        for ax, (field, ylabel) in zip(axes[0], panels):
            for framework, style in (("mtl_jax", "-"), ("torchjd", "--")):
                if framework == "torchjd" and not with_torchjd:
                    continue
                for label, pts in sorted(series(field, framework).items()):
                    pts.sort()
                    name = label if framework == "mtl_jax" else f"torchjd {label}"
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=name)
            ax.set_xlabel("number of tasks K")
            ax.set_ylabel(ylabel)
            ax.set_yscale("log")
            ax.set_title(f"{wl.upper()}: {ylabel}")
        axes[0][-1].legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(fname)
    return written


# ---------------------------------------------------------------------------- CLI


def _methods(spec: str) -> list[str]:
    if spec == "all":
        return step_time.all_methods()
    if spec == "loss":
        return list(step_time.LOSS_METHODS)
    return [step_time.ALIASES.get(m, m) for m in step_time._csv_list(spec)]


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out", help="output directory (JSON, markdown, PNGs)")
    p.add_argument("--methods", default=None, help="comma list of balancer names, 'loss' or 'all'")
    p.add_argument("--workloads", default=None, help="comma list of w1, w2, w3")
    p.add_argument("--num-tasks", default=None, help="K values for W1 and W3 (default 2,10,40)")
    p.add_argument("--w2-tasks", type=int, default=10, help="K for W2")
    p.add_argument("--modes", default="", help="only these modes (jacobian, representation, ...)")
    p.add_argument(
        "--precision", default=None, help="comma list of f32, bf16 (default f32,bf16; quick: f32)"
    )
    p.add_argument(
        "--bf16-methods",
        default="equal_weighting,mgda,upgrad",
        help="methods that also run in the non-f32 precisions ('all' for every one)",
    )
    p.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None)
    p.add_argument("--steps", type=int, default=5, help="timed rounds per configuration")
    p.add_argument("--min-sample-ms", type=float, default=50.0)
    p.add_argument("--chunk-size", type=int, default=None, help="tasks per Jacobian chunk")
    p.add_argument("--no-torchjd", action="store_true", help="skip the torchjd runs")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the torchjd runs (default: torch's own choice)",
    )
    p.add_argument("--budget-min", type=float, default=None, help="stop starting configs after")
    p.add_argument(
        "--quick",
        action="store_true",
        help="seconds: W2 and W3 (10⁴ columns), K=3, MGDA, 2 rounds, unless overridden",
    )
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(sys.argv[1:] if argv is None else list(argv))

    backend = a.device or jax.default_backend()
    device = jax.devices(backend)[0]
    torch_device, torch_threads = "cpu", None
    try:
        import torch

        if backend == "gpu":
            torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        if a.torch_threads is not None:
            torch.set_num_threads(a.torch_threads)
        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    methods = _methods(a.methods or ("mgda" if a.quick else "all"))
    wls = step_time._csv_list(a.workloads or ("w2,w3" if a.quick else "w1,w2,w3"))
    ks = [int(k) for k in step_time._csv_list(a.num_tasks or ("3" if a.quick else "2,10,40"))]
    steps = min(a.steps, 2) if a.quick else a.steps
    precisions = step_time._csv_list(a.precision or ("f32" if a.quick else "f32,bf16"))
    for prec in precisions:
        if prec not in PRECISIONS:
            raise SystemExit(f"--precision: unknown {prec!r} (f32, bf16)")
    low = methods if a.bf16_methods == "all" else _methods(a.bf16_methods)
    out_dir = pathlib.Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = (lambda s: None) if a.quiet else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)

    def write(results: list[Result], final: bool) -> dict:
        """Writes results.json / results.md (after every configuration, then the PNGs)."""
        elapsed = time.perf_counter() - t0
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            torch_version = None
        meta = {
            "command": command,
            "complete": final,
            "started_utc": started.isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 1),
            "jax": jax.__version__,
            "backend": backend,
            "devices": [str(d) for d in jax.devices(backend)],
            "torch": torch_version,
            "torch_device": torch_device,
            "torch_threads": torch_threads,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "cpu_count": os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "process_peak_rss_mb": _peak_rss_mb(False),
            "steps": steps,
        }
        header = (
            f"`{command}` — jax {jax.__version__} on {backend} ({meta['devices'][0]}, "
            f"{len(meta['devices'])} device(s)); {steps} timed rounds after one warm-up step; "
            f"load average {load_before[0]:.2f} before, {meta['load_average_after'][0]:.2f} "
            f"after; {elapsed / 60:.1f} min{'' if final else ' (incomplete: still running)'}.\n\n"
            "ours ms: median per step. × EW: to our float32 equal weighting on the same "
            "workload and K, in this run. torchjd ms: torchjd 0.18 in this run, interleaved "
            "with ours († = PEERS.md's number, not measured here). LibMTL ms: PEERS.md. "
            "Ratios > 1 mean we are faster. XLA temp MB: the compiled step's temporary "
            "buffers (`memory_analysis`). peak RSS MB: the process's peak resident set during "
            "that method's warm-up step (includes everything resident: compare differences)."
        )
        table = to_markdown(results, peer_table())
        (out_dir / "results.md").write_text(header + "\n\n" + table + "\n")
        pngs = plots(results, out_dir) if final else []
        doc = {"meta": meta, "results": [dataclasses.asdict(r) for r in results], "plots": pngs}
        (out_dir / "results.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
        if final and not a.quiet:
            print(header + "\n\n" + table)
        return doc

    with jax.default_device(device):
        results = run_benchmark(
            methods,
            wls,
            ks,
            w2_tasks=a.w2_tasks,
            modes=step_time._csv_list(a.modes),
            precisions=precisions,
            low_precision_methods=low,
            steps=steps,
            min_sample_ms=0.0 if a.quick else a.min_sample_ms,
            chunk_size=a.chunk_size,
            torchjd=not a.no_torchjd and backend != "tpu",
            torch_device=torch_device,
            quick=a.quick,
            budget_s=None if a.budget_min is None else 60 * a.budget_min,
            log=log,
            checkpoint=lambda rs: write(rs, final=False),
        )
    doc = write(results, final=True)
    return doc


if __name__ == "__main__":
    main()
