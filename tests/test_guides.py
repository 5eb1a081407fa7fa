"""The guides' python blocks run as written: a page's blocks, in order, form one script."""

import os
import pathlib
import re
import subprocess
import sys

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
def test_guide_runs(page, tmp_path):
    """The page's blocks run in order in a fresh interpreter, on 4 CPU devices."""
    script = tmp_path / "guide.py"
    script.write_text("\n".join(_blocks(page)))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env.pop("MPLBACKEND", None)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{page} failed:\n{proc.stderr[-3000:]}"
