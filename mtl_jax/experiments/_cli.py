"""The ``mtl-jax`` console script.

``mtl-jax`` with no arguments runs the default experiment (the GradNorm paper's toy
regression, fast form); ``mtl-jax list`` names every packaged experiment;
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


def _run(exp: _registry.Experiment, options: dict) -> int:
    """Runs ``exp`` with the parsed ``options`` (only those it takes; see ``exp.options``)."""
    name, fast, seed, out = exp.name, not options["full"], options["seed"], options["out"]
    kwargs = {}
    for param in exp.parameters:  # resume, balancer, data_dir: passed when set
        value = options.get(param)
        if value not in (None, False):
            kwargs[param] = value
    data_dir = options.get("data_dir")
    out_dir = out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    form = "fast" if fast else "full"
    print(f"mtl-jax: running {name!r} ({form} form, --seed {seed}) -> {out_dir}")
    _registry.set_quiet(options.get("quiet", False))
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
        held = _registry.verdict(result).upper().replace("NOT TESTED", "not tested")
        print(f"\nclaim: {result.claim}\n  -> {held} on seeds {result.seeds}")
        if result.claim_held is None and result.claim_test.get("reason"):
            print(f"     ({result.claim_test['reason']})")
    for f in [*result.files, path]:
        print(f"wrote {f}")
    print(f"done in {wall:.1f} s")
    return 0


def _run_command(name: str, argv: list[str]) -> int:
    """``mtl-jax run NAME ARGV...``: parses ARGV with NAME's own parser, then runs it."""
    exps = _registry.available()
    if name not in exps:
        return _unknown(name)
    exp = exps[name]
    options = vars(_experiment_parser(exp).parse_args(argv))
    return _run(exp, options)


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
        return _run_command(args.name, [])  # not reached: a name is caught above
    except _UsageError as err:
        return err.status


if __name__ == "__main__":
    sys.exit(main())
