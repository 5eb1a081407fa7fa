"""The ``mtl-jax`` console script.

``mtl-jax`` with no arguments runs the default experiment (the GradNorm paper's toy
regression, fast form); ``mtl-jax list`` names every packaged experiment; ``mtl-jax report
[--results DIR] [--write | --check]`` builds the README's experiment table from the
recorded full runs in ``DIR/NAME/results.json``;
``mtl-jax run NAME [--full] [--seed S] [--out DIR] [--quiet] ...`` runs one and
writes its PNG and ``results.json`` into ``DIR/NAME``; ``mtl-jax run NAME --help``
describes that experiment: what it runs, the seeds it uses, the claim it checks
and the options it takes (``--resume``, ``--balancer``, ``--data-dir`` only where
it takes them). All of it comes from the experiment's one declaration, its
:func:`~mtl_jax.experiments._registry.register` call and its function's keyword
parameters.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import sys
import textwrap
import time

from mtl_jax.experiments import _registry
from mtl_jax.experiments._data_cli import add_data_parser, run_data_command

DEFAULT_EXPERIMENT = "toy-regression"
DEFAULT_OUT = pathlib.Path("mtl_jax_runs")
#: Exit status for usage errors (unknown experiment, unsupported option), as argparse.
USAGE_ERROR = 2


class _UsageError(Exception):
    """Raised by :class:`_Parser` instead of exiting, so :func:`main` returns the status."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that returns from :func:`main` rather than calling ``sys.exit``.

    A usage error prints this parser's own usage and the message to stderr
    (``mtl-jax run NAME --sead 3`` shows ``NAME``'s usage) and makes
    :func:`main` return 2; ``--help`` prints the help and returns 0.
    """

    def exit(self, status=0, message=None):
        if message:
            self._print_message(message, sys.stderr)
        raise _UsageError(status)


#: Every ``mtl-jax run`` option, by the experiment parameter it sets (``None``: the CLI's own).
_OPTIONS = {
    "full": (("--full",), {"action": "store_true", "help": "full size instead of the fast form"}),
    "seed": (
        ("--seed",),
        {
            "type": int,
            "default": 0,
            "help": "first seed; the run uses seeds S, S+1, ... (default 0)",
        },
    ),
    "out": (
        ("--out",),
        {
            "type": pathlib.Path,
            "default": DEFAULT_OUT,
            "help": f"output folder; results go to OUT/NAME (default {DEFAULT_OUT})",
        },
    ),
    "quiet": (("--quiet",), {"action": "store_true", "help": "no progress bars"}),
    "resume": (
        ("--resume",),
        {
            "action": "store_true",
            "help": "resume an interrupted run from its last checkpoint in OUT/NAME",
        },
    ),
    "balancer": (
        ("--balancer",),
        {"default": None, "help": "the balancer, a name in mtl_jax.balancers (e.g. mgda)"},
    ),
    "data_dir": (
        ("--data-dir",),
        {
            "type": pathlib.Path,
            "default": None,
            "help": "data cache of the offline builders and of user-prepared TFDS data "
            "(default $MTL_JAX_DATA_DIR or ~/.cache/mtl_jax/tensorflow_datasets)",
        },
    ),
}


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and its ``run`` subparser."""
    p = _Parser(
        prog="mtl-jax",
        description=(
            "Run mtl_jax's packaged experiments. With no command, runs the default "
            f"experiment ({DEFAULT_EXPERIMENT!r}) in its fast form."
        ),
        epilog="`mtl-jax run NAME --help` describes one experiment and its options.",
    )
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("list", help="list the packaged experiments")
    run = sub.add_parser(
        "run",
        help="run one experiment (see `mtl-jax run NAME --help`)",
        usage="mtl-jax run NAME [options]  (`mtl-jax run NAME --help` lists NAME's options)",
    )
    run.add_argument("name", help="experiment name (see `mtl-jax list`)")
    report = sub.add_parser(
        "report",
        help="the README's experiment table from recorded full runs (results/NAME/results.json)",
    )
    report.add_argument(
        "--results",
        type=pathlib.Path,
        default=pathlib.Path("results"),
        help="folder of recorded full runs, `mtl-jax run NAME --full --out DIR` (default results)",
    )
    report.add_argument(
        "--readme", type=pathlib.Path, default=pathlib.Path("README.md"), help="default README.md"
    )
    mode = report.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's table differs")
    mode.add_argument("--write", action="store_true", help="replace the README's table")
    add_data_parser(sub)
    return p, run


def _seeds_text(exp: _registry.Experiment) -> str:
    fast, full = exp.num_seeds
    return (
        f"seeds: S, ..., S+{fast - 1} in the fast form ({fast} seed{'s' * (fast > 1)}), "
        f"S, ..., S+{full - 1} with --full ({full} seed{'s' * (full > 1)}); "
        "S is --seed (default 0)"
    )


def _experiment_parser(exp: _registry.Experiment) -> argparse.ArgumentParser:
    """``mtl-jax run NAME``'s parser: the options ``exp`` takes, its claim and its seeds."""
    lines = [exp.summary, "", _seeds_text(exp), f"claim checked: {exp.claim}"]
    for part in exp.parts:
        fast, full = (part.detectable(n) for n in exp.num_seeds)
        effect = (
            ""
            if fast is None and full is None
            else "; detects a mean difference of "
            + ", ".join(
                f"{d:.3g} ({form})" for d, form in ((fast, "fast"), (full, "full")) if d is not None
            )
            + f" with 80% power at the stated sd {part.sd:g}"
        )
        lines.append(
            f"  part: {part.name} ({part.statistic}, one-sided, alpha={part.alpha:g}{effect})"
        )
    p = _Parser(
        prog=f"mtl-jax run {exp.name}",
        description="\n".join(textwrap.fill(line, 79, break_on_hyphens=False) for line in lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in exp.options:
        flags, kwargs = _OPTIONS[option]
        p.add_argument(*flags, dest=option, **kwargs)
    return p


def _usage_error(message: str) -> int:
    print(f"mtl-jax: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _unknown(name: str) -> int:
    names = ", ".join(_registry.available())
    return _usage_error(f"unknown experiment {name!r}; available: {names}")


def _run(exp: _registry.Experiment, options: dict, command: list[str] | None = None) -> int:
    """Runs ``exp`` with the parsed ``options``, each passed down as the argument it names.

    ``data_dir`` and ``quiet`` go to every experiment that takes them (all that
    read data); ``resume`` and ``balancer`` when given. Nothing outside the call
    is changed, so one run cannot leak its options into the next.
    """
    name, fast, seed, out = exp.name, not options["full"], options["seed"], options["out"]
    kwargs = {}
    for param in exp.parameters:
        value = options.get(param)
        if param in _registry.DATA_PARAMETERS or value not in (None, False):
            kwargs[param] = value
    out_dir = out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    form = "fast" if fast else "full"
    print(f"mtl-jax: running {name!r} ({form} form, --seed {seed}) -> {out_dir}")
    # The wall time of a resumed run counts its earlier parts too: interrupted ones, and
    # a finished one when a finished run is resumed to rewrite its outputs (its
    # checkpoints are final, so it only evaluates and plots again).
    parts_file = out_dir / "wall_time_parts.json"
    earlier = _earlier_parts(parts_file) if options.get("resume") else []
    t0 = time.perf_counter()
    previous = _exit_on_sigterm()  # a killed run (timeout, job scheduler) records its time too
    try:
        result = exp.fn(fast=fast, out_dir=out_dir, seed=seed, **kwargs)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        parts = [*earlier, time.perf_counter() - t0]
        if exp.supports_resume:
            parts_file.write_text(json.dumps(parts))
    wall = float(sum(parts))
    path = _registry.write_results(
        result,
        out_dir,
        name=name,
        form=form,
        wall_time_s=wall,
        command=command,
        wall_time_parts_s=parts,
    )
    print()
    print(result.format_table())
    if result.claim:
        label = json.loads(path.read_text())["verdict"]
        print(f"\nclaim: {result.claim}\n  -> {label.upper()} on seeds {result.seeds}")
        for part in result.claims:
            figures = _part_figures(part)
            print(f"     {part['name']}: {part['verdict']}{figures}")
            if part.get("reason"):
                print(f"       ({part['reason']})")
        if result.claim_held is None and result.claim_test.get("reason"):
            print(f"     ({result.claim_test['reason']})")
    for f in [*result.files, path]:
        print(f"wrote {f}")
    print(f"done in {wall:.1f} s")
    return 0


def _exit_on_sigterm():
    """Makes SIGTERM raise ``SystemExit`` (so ``finally`` blocks run); returns the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _earlier_parts(path: pathlib.Path) -> list[float]:
    """Wall times of the interrupted parts of a run, recorded in ``path`` (or none)."""
    try:
        parts = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [float(t) for t in parts] if isinstance(parts, list) else []


def _part_figures(part: dict) -> str:
    """`` (t = 2.1, p = 0.03, effect +0.041, 90% CI [..])`` for a tested claim part."""
    bits = []
    if part.get("value") is not None:
        symbol = {"paired_t": "t", "sign": "wins", "bootstrap": "mean"}.get(part["statistic"], "")
        bits.append(f"{symbol} = {part['value']:.3g}")
    if part.get("p_value") is not None:
        bits.append(f"p = {part['p_value']:.3g}")
    if part.get("effect_size") is not None:
        bits.append(f"effect {part['effect_size']:+.3g}")
    if part.get("interval") is not None:
        lo, hi = part["interval"]
        bits.append(f"{100 * (1 - 2 * part['alpha']):.0f}% CI [{lo:.3g}, {hi:.3g}]")
    return f" ({', '.join(bits)})" if bits else ""


def _run_command(name: str, argv: list[str]) -> int:
    """``mtl-jax run NAME ARGV...``: parses ARGV with NAME's own parser, then runs it."""
    exps = _registry.available()
    if name not in exps:
        return _unknown(name)
    exp = exps[name]
    options = vars(_experiment_parser(exp).parse_args(argv))
    return _run(exp, options, command=["run", name, *argv])


def _report_command(args) -> int:
    """``mtl-jax report``: prints the table, or ``--write``s / ``--check``s it in the README."""
    from mtl_jax.experiments import _report

    try:
        if args.check:
            if _report.check(args.readme, args.results):
                print(f"{args.readme}: the experiment table matches {args.results}")
                return 0
            print(
                f"{args.readme}: the experiment table differs from the recorded runs in "
                f"{args.results}; run `mtl-jax report --write --results {args.results}`",
                file=sys.stderr,
            )
            return 1
        if args.write:
            changed = _report.write(args.readme, args.results)
            print(f"{args.readme}: {'updated' if changed else 'already up to date'}")
            return 0
    except (OSError, ValueError) as err:
        return _usage_error(str(err))
    print(_report.table(args.results), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mtl-jax`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["run"] and len(argv) > 1 and not argv[1].startswith("-"):
            return _run_command(argv[1], argv[2:])
        parser, run = _parser()
        if argv[:1] == ["run"] and len(argv) > 1 and argv[1] not in ("-h", "--help"):
            run.error(f"the experiment name comes first, then its options; got {argv[1]!r}")
        args = parser.parse_args(argv)
        if args.command is None:
            return _run_command(DEFAULT_EXPERIMENT, [])
        if args.command == "list":
            for name, exp in _registry.available().items():
                print(f"{name:24s} {exp.help}")
            return 0
        if args.command == "data":
            return run_data_command(args)
        if args.command == "report":
            return _report_command(args)
        return _run_command(args.name, [])  # not reached: a name is caught above
    except _UsageError as err:
        return err.status


if __name__ == "__main__":
    sys.exit(main())
