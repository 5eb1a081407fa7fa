"""The README's python examples run as written, and every file it names exists."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3
    # Every example that builds a balancer says which leaves are shared.
    for block in BLOCKS:
        for call in re.findall(r"mtl\.balancers\.\w+\((.*?)\)", block, flags=re.S):
            assert "shared=" in call, call


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, run_script):
    """Each block runs alone in a fresh interpreter, as a pasted file, on 4 CPU devices."""
    proc = run_script(BLOCKS[index])
    assert proc.returncode == 0, f"README example {index} failed:\n{proc.stderr[-3000:]}"


def _named_paths():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    ticks = re.findall(r"`((?:benchmarks|docs|notebooks|tests|mtl_jax)/[\w./-]*)`", README)
    return sorted({p for p in links + ticks if "://" not in p and "_build" not in p})


def test_every_file_the_readme_names_exists():
    paths = _named_paths()
    assert "benchmarks/PEERS.md" in paths
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README names files missing from the repository: {missing}"
