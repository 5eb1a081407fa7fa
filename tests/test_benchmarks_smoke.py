"""The step-time benchmark runs end to end in its quick mode (one method, W2, two steps)."""

import csv
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_step_time_quick(tmp_path):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import step_time

    out_csv = tmp_path / "t.csv"
    out_md = tmp_path / "t.md"
    rows = step_time.main(
        [
            "--quick",
            "--methods",
            "famo",
            "--workloads",
            "w2",
            "--quiet",
            "--out-csv",
            str(out_csv),
            "--out-md",
            str(out_md),
        ]
    )
    assert [(r.method, r.mode) for r in rows] == [("equal_weighting", "loss"), ("famo", "loss")]
    assert all(np.isfinite(r.median_ms) and r.median_ms > 0 for r in rows)
    assert rows[0].ratio == 1.0
    with open(out_csv) as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "| W2 gradnorm-toy K=10 | famo | loss |" in out_md.read_text()


def test_w3_torchjd_rows():
    """``--torchjd`` adds torchjd's aggregator, timed in the same run, next to ours."""
    import pytest

    pytest.importorskip("torchjd")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import step_time

    args = ["--quick", "--methods", "mgda", "--workloads", "w3", "--num-tasks", "3"]
    rows = step_time.main([*args, "--torchjd", "--quiet"])
    modes = {(r.method, r.mode): r for r in rows}
    assert set(modes) == {
        ("equal_weighting", "aggregate"),
        ("mgda", "aggregate"),
        ("equal_weighting", "torchjd"),
        ("mgda", "torchjd"),
    }
    assert all(np.isfinite(r.median_ms) and r.median_ms > 0 for r in rows)
