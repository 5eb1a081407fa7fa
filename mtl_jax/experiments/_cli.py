"""The ``mtl-jax`` console script.

``mtl-jax`` with no arguments runs the default experiment (the GradNorm paper's toy
regression, fast form); ``mtl-jax list`` names every packaged experiment;
``mtl-jax run NAME [--full] [--seed S] [--out DIR] [--resume] [--quiet]`` runs one
and writes its PNG and ``results.json`` into ``DIR/NAME``; ``mtl-jax run NAME
--help`` describes that experiment: what it runs, the seeds it uses and the claim
it checks.
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import sys
import textwrap
import time

from mtl_jax.data import _tfds
from mtl_jax.data._cli import add_data_parser, run_data_command
from mtl_jax.experiments import _registry

DEFAULT_EXPERIMENT = "toy-regression"
DEFAULT_OUT = pathlib.Path("mtl_jax_runs")
#: Exit status for usage errors (unknown experiment, unsupported option), as argparse.
USAGE_ERROR = 2


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true", help="full size instead of the fast form")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="first seed; the run uses seeds S, S+1, ... (default 0)",
    )
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=DEFAULT_OUT,
        help=f"output folder; results go to OUT/NAME (default {DEFAULT_OUT})",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="resume an interrupted run from its last checkpoint in OUT/NAME",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--balancer", default=None, help="balancer name (experiments that take one)")
    p.add_argument(
        "--data-dir",
        type=pathlib.Path,
        default=None,
        help="data cache for the offline builders (default $MTL_JAX_DATA_DIR or "
        "~/.cache/mtl_jax/tensorflow_datasets); celeba reads its TFDS data here",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtl-jax",
        description=(
            "Run mtl_jax's packaged experiments. With no command, runs the default "
            f"experiment ({DEFAULT_EXPERIMENT!r}) in its fast form."
        ),
        epilog="`mtl-jax run NAME --help` describes one experiment.",
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("list", help="list the packaged experiments")
    run = sub.add_parser("run", help="run one experiment (see `mtl-jax run NAME --help`)")
    run.add_argument("name", help="experiment name (see `mtl-jax list`)")
    _add_run_options(run)
    add_data_parser(sub)
    return p


def _seeds_text(exp: _registry.Experiment) -> str:
    if exp.num_seeds is None:
        return "seeds: derived from --seed S as S, S+1, ... (see the experiment's docs)"
    fast, full = exp.num_seeds
    return (
        f"seeds: S, ..., S+{fast - 1} in the fast form ({fast} seeds), S, ..., "
        f"S+{full - 1} with --full ({full} seeds); S is --seed (default 0)"
    )


def _experiment_parser(exp: _registry.Experiment) -> argparse.ArgumentParser:
    lines = [exp.summary, "", _seeds_text(exp)]
    lines.append(f"claim checked: {exp.claim or '(not declared)'}")
    if not exp.supports_resume:
        lines.append("--resume: not supported by this experiment")
    p = argparse.ArgumentParser(
        prog=f"mtl-jax run {exp.name}",
        description="\n".join(textwrap.fill(line, 79) for line in lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(p)
    return p


def _usage_error(message: str) -> int:
    print(f"mtl-jax: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _unknown(name: str) -> int:
    names = ", ".join(_registry.available())
    return _usage_error(f"unknown experiment {name!r}; available: {names}")


def _run(
    name: str,
    *,
    fast: bool,
    seed: int,
    out: pathlib.Path,
    resume: bool = False,
    quiet: bool = False,
    **options,
) -> int:
    exps = _registry.available()
    if name not in exps:
        return _unknown(name)
    exp = exps[name]
    kwargs = {}
    if resume:
        if not exp.supports_resume:
            return _usage_error(f"experiment {name!r} does not support --resume")
        kwargs["resume"] = True
    data_dir = options.pop("data_dir", None)
    if data_dir is not None and "data_dir" in inspect.signature(exp.fn).parameters:
        kwargs["data_dir"] = data_dir  # e.g. celeba's user-prepared TFDS data dir
    for opt, value in options.items():  # --balancer: only where taken
        if value is not None:
            if opt not in inspect.signature(exp.fn).parameters:
                flag = "--" + opt.replace("_", "-")
                return _usage_error(f"experiment {name!r} does not take {flag}")
            kwargs[opt] = value
    out_dir = out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    form = "fast" if fast else "full"
    print(f"mtl-jax: running {name!r} ({form} form, --seed {seed}) -> {out_dir}")
    _registry.set_quiet(quiet)
    _tfds.set_data_dir(data_dir)  # where mtl_jax.data.load prepares the offline builders
    t0 = time.perf_counter()
    try:
        result = exp.fn(fast=fast, out_dir=out_dir, seed=seed, **kwargs)
    finally:
        _registry.set_quiet(False)
        _tfds.set_data_dir(None)
    wall = time.perf_counter() - t0
    path = _registry.write_results(result, out_dir, name=name, form=form, wall_time_s=wall)
    print()
    print(result.format_table())
    if result.claim:
        held = {True: "HELD", False: "NOT HELD", None: "not evaluated"}[result.claim_held]
        print(f"\nclaim: {result.claim}\n  -> {held} on seeds {result.seeds}")
    for f in [*result.files, path]:
        print(f"wrote {f}")
    print(f"done in {wall:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mtl-jax`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and ({"-h", "--help"} & set(argv)):
        names = [a for a in argv[1:] if not a.startswith("-")]
        if names:  # `mtl-jax run NAME --help`: describe that experiment
            exps = _registry.available()
            if names[0] not in exps:
                return _unknown(names[0])
            _experiment_parser(exps[names[0]]).print_help()
            return 0
    args = _parser().parse_args(argv)
    if args.command is None:
        return _run(DEFAULT_EXPERIMENT, fast=True, seed=0, out=DEFAULT_OUT)
    if args.command == "list":
        for name, exp in _registry.available().items():
            print(f"{name:24s} {exp.help}")
        return 0
    if args.command == "data":
        return run_data_command(args)
    return _run(
        args.name,
        fast=not args.full,
        seed=args.seed,
        out=args.out,
        resume=args.resume,
        quiet=args.quiet,
        balancer=args.balancer,
        data_dir=args.data_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
