"""The guides' python blocks run as written: a page's blocks, in order, form one script."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GUIDES = ["training_loop.md", "missing_labels.md"]


def _blocks(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_every_guide_has_examples():
    for page in GUIDES:
        assert _blocks(page), page


@pytest.mark.parametrize("page", GUIDES)
def test_guide_runs(page, run_script):
    """The page's blocks run in order in a fresh interpreter, on 4 CPU devices."""
    proc = run_script("\n".join(_blocks(page)), timeout=600)
    assert proc.returncode == 0, f"{page} failed:\n{proc.stderr[-3000:]}"
