"""Sphinx configuration: API reference generated from each package's ``__all__``.

Build offline, warnings as errors (from the repository root)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Before reading the sources, this file writes ``docs/api/<package>.rst`` (one page per
public package: an autosummary table and the autodoc entry of every name in its
``__all__``) and copies ``notebooks/*.ipynb`` into ``docs/notebooks/``; both are
generated, git-ignored and rewritten on every build. Notebooks are rendered from
their stored outputs, never executed here.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import shutil
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

project = "mtl_jax"
author = "mtl_jax contributors"
copyright = "2026, mtl_jax contributors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "mtl_jax"

autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

nb_execution_mode = "off"  # render the outputs stored in the notebooks
myst_enable_extensions = ["dollarmath"]
suppress_warnings = ["mystnb.unknown_mime_type"]

#: The packages whose ``__all__`` makes up the reference, in reading order.
PACKAGES = {
    "mtl_jax": "Top level: task Jacobians and tree helpers",
    "mtl_jax.balancers": "Gradient balancers (optax transforms)",
    "mtl_jax.weighting": "Pure weight functions",
    "mtl_jax.models": "Flax multi-task models",
    "mtl_jax.training": "Training steps",
    "mtl_jax.recipes": "Training procedures from papers",
    "mtl_jax.transfer": "Transfer learning",
    "mtl_jax.adaptation": "Domain adaptation and label shift",
    "mtl_jax.data": "Datasets",
}


def _is_namedtuple(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def _page(modname: str, title: str) -> str:
    mod = importlib.import_module(modname)
    names = list(mod.__all__)
    heading = f"``{modname}`` — {title}"
    lines = [
        heading,
        "=" * len(heading),
        "",
        f".. automodule:: {modname}",
        "   :no-members:",
        "",
        f".. currentmodule:: {modname}",
        "",
    ]
    submodules = [n for n in names if inspect.ismodule(getattr(mod, n))]
    if submodules:
        lines += ["Subpackages: " + ", ".join(f":doc:`{modname}.{n}`" for n in submodules), ""]
    members = [n for n in names if n not in submodules]
    # Functions (the methods a reader looks for) first, then classes (states, modules).
    members.sort(key=lambda n: inspect.isclass(getattr(mod, n)))
    if not members:
        return "\n".join(lines)
    lines += [".. autosummary::", "   :nosignatures:", ""]
    lines += [f"   {n}" for n in members] + [""]
    for n in members:
        obj = getattr(mod, n)
        if inspect.isclass(obj):
            if _is_namedtuple(obj):
                lines += [f".. autoclass:: {n}", ""]
            else:
                lines += [f".. autoclass:: {n}", "   :members:", ""]
        elif callable(obj):
            lines += [f".. autofunction:: {n}", ""]
        else:
            lines += [f".. autodata:: {n}", "   :no-value:", ""]
    return "\n".join(lines)


def _generate() -> None:
    api = DOCS / "api"
    api.mkdir(exist_ok=True)
    for modname, title in PACKAGES.items():
        text = _page(modname, title)
        path = api / f"{modname}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    index = ["API reference", "=============", "", ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {m}" for m in PACKAGES] + [""]
    (api / "index.rst").write_text("\n".join(index))

    nb_dir = DOCS / "notebooks"
    nb_dir.mkdir(exist_ok=True)
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for stale in nb_dir.glob("*.ipynb"):
        if stale.name not in {p.name for p in sources}:
            stale.unlink()
    for src in sources:
        dst = nb_dir / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


_generate()
