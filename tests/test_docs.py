"""The Sphinx docs build offline with warnings as errors and cover every public name."""

import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = [
    "mtl_jax",
    "mtl_jax.balancers",
    "mtl_jax.weighting",
    "mtl_jax.models",
    "mtl_jax.training",
    "mtl_jax.recipes",
    "mtl_jax.transfer",
    "mtl_jax.adaptation",
    "mtl_jax.data",
]


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("furo")
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(out / ".doctrees"), str(ROOT / "docs"), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_every_public_name_is_in_the_reference(html):
    ids = set()
    for page in (html / "api").glob("*.html"):
        ids |= set(re.findall(r'id="(mtl_jax[\w.]*)"', page.read_text()))
    missing = []
    for modname in PACKAGES:
        mod = importlib.import_module(modname)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, type(sys)):  # a subpackage: has its own page
                assert (html / "api" / f"{obj.__name__}.html").exists(), obj.__name__
                continue
            if f"{modname}.{name}" not in ids:
                missing.append(f"{modname}.{name}")
    assert not missing, f"not in the API reference: {missing}"


def test_guides_and_notebooks_are_rendered_with_their_outputs(html):
    for page in ["index", "training_loop", "missing_labels", "shared", "modes", "pta", "dsmt"]:
        assert (html / f"{page}.html").exists(), page
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = html / "notebooks" / f"{nb.stem}.html"
        assert page.exists(), page
        # Rendered from the stored outputs: at least one figure per notebook.
        assert "<img" in page.read_text(), f"{nb.name} has no stored figure output"
