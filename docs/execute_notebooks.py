"""Executes notebooks in place and stores their outputs (so the docs render them).

Usage, from the repository root: ``python docs/execute_notebooks.py [notebooks/NAME.ipynb ...]``
(default: every notebook in ``notebooks/``). Each runs in a temporary working
directory with this interpreter's kernel; the sizes of the saved files are printed
(keep each under ~1 MB).
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]


def execute(path: pathlib.Path) -> None:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        client = nbclient.NotebookClient(
            nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": tmp}}
        )
        start = time.time()
        client.execute()
    nbformat.write(nb, path)
    print(f"{path.name}: {time.time() - start:.0f} s, {path.stat().st_size / 1e6:.2f} MB")


def main(argv: list[str]) -> None:
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    os.environ.pop("XLA_FLAGS", None)
    os.environ.pop("MPLBACKEND", None)
    paths = [pathlib.Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for p in paths:
        execute(p)


if __name__ == "__main__":
    main(sys.argv[1:])
