"""What every benchmark times: balancers by name, their modes, and compiled one-step runners.

The library behind ``python -m benchmarks`` (and the other scripts in this
folder): :func:`make_balancer` builds any ``mtl_jax.balancers`` method by name
with default hyperparameters, :func:`modes_for` asks
:func:`mtl_jax.training.make_train_step` which modes it accepts for it, and
:func:`train_runner` / :func:`aggregator_runner` compile one full jitted
training step (per-task losses, the gradient information the balancer needs,
the balancer, Adam at lr 1e-3, the update) or the balancer's update alone (W3),
reporting XLA's temporary-buffer size and FLOP estimate. Timing, tables and
plots are in ``benchmarks/__main__.py``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import jax
import optax

import mtl_jax as mtl
from benchmarks import workloads

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


#: Names of ``--precision`` values and the compute dtype each one runs in.
PRECISIONS = {"f32": None, "bf16": "bfloat16"}


def with_precision(wl: workloads.Workload, precision: str) -> workloads.Workload:
    """``wl`` with its loss and representation computed in ``precision`` (mixed precision)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return wl
    mp = lambda f: mtl.training.mixed_precision(f, compute_dtype=dtype)
    rep = mtl.training.Representation(mp(wl.representation.encode), mp(wl.representation.decode))
    return wl._replace(loss_fn=mp(wl.loss_fn), representation=rep)


def csv_list(s: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [x.strip() for x in s.split(",") if x.strip()]


def compile_step(jitted, *args) -> tuple[Callable, float, float]:
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


def train_runner(
    wl: workloads.Workload,
    name: str,
    mode: str,
    chunk_size: int | None = None,
    precision: str = "f32",
):
    """One blocked training step of balancer ``name`` on ``wl`` in ``mode`` and ``precision``.

    Returns ``(run, xla_temp_mb, xla_mflop)``; ``run()`` advances the state by one step.
    """
    wl = with_precision(wl, precision)
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
    compiled, temp, mflop = compile_step(step.step, holder[0], wl.batch)

    def run():
        holder[0], metrics = compiled(holder[0], wl.batch)
        return jax.block_until_ready((holder[0], metrics))

    return run, temp, mflop


def aggregator_runner(agg: workloads.Aggregator, name: str):
    """One blocked ``balancer.update`` on W3's Jacobian; ``(run, xla_temp_mb, xla_mflop)``."""
    balancer = make_balancer(name, agg.num_tasks, None)
    holder = [balancer.init({"w": agg.jac["w"][0]})]
    update = jax.jit(lambda j, s, losses: balancer.update(j, s, task_losses=losses))
    compiled, temp, mflop = compile_step(update, agg.jac, holder[0], agg.losses)

    def run():
        out, holder[0] = compiled(agg.jac, holder[0], agg.losses)
        return jax.block_until_ready((out, holder[0]))

    return run, temp, mflop
