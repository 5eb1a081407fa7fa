"""The ``mtl-jax data list|prepare NAME [--data-dir DIR]|info NAME [--data-dir DIR]`` commands."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from mtl_jax.data import _tfds


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``data`` command and its ``list``, ``prepare`` and ``info`` subcommands."""
    data = subparsers.add_parser("data", help="list, prepare and describe the offline datasets")
    sub = data.add_subparsers(dest="data_command", required=True)
    sub.add_parser("list", help="list the offline TFDS builders")
    for cmd, text in [
        ("prepare", "generate a builder's array_record files (with progress bars)"),
        ("info", "describe a builder: features, splits and sizes (prepares it if needed)"),
    ]:
        p = sub.add_parser(cmd, help=text)
        p.add_argument("name", help="builder name (see `mtl-jax data list`)")
        p.add_argument(
            "--data-dir",
            type=pathlib.Path,
            default=None,
            help=f"cache directory (default $MTL_JAX_DATA_DIR or {_tfds.default_data_dir()})",
        )


def run_data_command(args: argparse.Namespace) -> int:
    """Runs a parsed ``mtl-jax data ...`` command; returns the exit status."""
    if args.data_command == "list":
        for name, cls in _tfds.BUILDERS.items():
            summary = (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{name:22s} {summary}")
        return 0
    if args.name not in _tfds.BUILDERS:
        names = ", ".join(_tfds.BUILDERS)
        print(f"mtl-jax: error: unknown dataset {args.name!r}; available: {names}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    builder = _tfds.prepare(args.name, data_dir=args.data_dir)
    wall = time.perf_counter() - t0
    if args.data_command == "prepare":
        print(f"prepared {args.name} in {builder.data_dir} ({wall:.1f} s)")
        return 0
    info = builder.info
    print(f"{args.name} {info.version}: {info.description}")
    print(f"data dir: {builder.data_dir}")
    print(f"features: {info.features}")
    for split, si in info.splits.items():
        print(f"split {split}: {si.num_examples} examples")
    return 0
