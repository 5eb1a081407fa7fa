"""The ``mtl-jax`` console script.

``mtl-jax`` with no arguments runs the embedded default experiment;
``mtl-jax list`` names every packaged experiment and ``mtl-jax run NAME`` runs one.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from mtl_jax.experiments import _registry

DEFAULT_EXPERIMENT = "toy-regression"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtl-jax",
        description=(
            "Run mtl_jax's packaged experiments. With no command, runs the default "
            f"experiment ({DEFAULT_EXPERIMENT!r}) in its fast form."
        ),
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("list", help="list the packaged experiments")
    run = sub.add_parser("run", help="run one experiment")
    run.add_argument("name", help="experiment name (see `mtl-jax list`)")
    run.add_argument("--full", action="store_true", help="full size instead of the fast form")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=pathlib.Path, default=pathlib.Path("mtl_jax_runs"))
    return p


def _run(name: str, *, fast: bool, seed: int, out: pathlib.Path) -> int:
    exp = _registry.get(name)
    out_dir = out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"mtl-jax: running {name!r} ({'fast' if fast else 'full'} form) -> {out_dir}")
    t0 = time.perf_counter()
    result = exp.fn(fast=fast, out_dir=out_dir, seed=seed)
    wall = time.perf_counter() - t0
    path = _registry.write_results(
        result, out_dir, name=name, form="fast" if fast else "full", wall_time_s=wall
    )
    print()
    print(result.format_table())
    for f in [*result.files, path]:
        print(f"wrote {f}")
    print(f"done in {wall:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        return _run(DEFAULT_EXPERIMENT, fast=True, seed=0, out=pathlib.Path("mtl_jax_runs"))
    if args.command == "list":
        for name, exp in _registry.available().items():
            print(f"{name:24s} {exp.help}")
        return 0
    return _run(args.name, fast=not args.full, seed=args.seed, out=args.out)


if __name__ == "__main__":
    sys.exit(main())
