"""Every notebook in notebooks/ executes top to bottom without error."""

import os
import pathlib
import sys

import pytest

# LLVM at -O0 without its expensive passes: the same IEEE float semantics, faster compiles.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel is this interpreter's: put its directory first on PATH.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    # One CPU device, as a user's kernel has; XLA's cheapest compiles, since these small
    # notebooks spend most of their time compiling (the setting gradient_balancing makes).
    monkeypatch.setenv("XLA_FLAGS", FAST_COMPILE)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # Notebooks show pictures.
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_with_its_outputs(path):
    """The docs render the stored outputs: every code cell ran, and the file stays small."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not not_run, f"code cells {not_run} of {path.name} have no stored execution"
    stored = [o for c in code for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in stored), "no stored figure"
    assert path.stat().st_size < 1_000_000, f"{path.name} is {path.stat().st_size} bytes"
