"""The benchmarks run end to end in their quick modes (seconds; no timing is asserted)."""

import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_w3_with_torchjd_quick(tmp_path):
    """``--workloads w3`` times the balancer alone; torchjd's aggregator of each method
    runs on the same Jacobian in the same rounds, its ratio taken to our EW."""
    import importlib.util

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import __main__ as bench

    has_torchjd = importlib.util.find_spec("torchjd") is not None
    args = ["--quick", "--methods", "mgda", "--workloads", "w3", "--num-tasks", "3", "--quiet"]
    doc = bench.main([*args, "--out", str(tmp_path)] + ([] if has_torchjd else ["--no-torchjd"]))
    rows = {(r["method"], r["mode"]): r for r in doc["results"]}
    expected = {("equal_weighting", "aggregate"), ("mgda", "aggregate")}
    if has_torchjd:
        expected |= {("equal_weighting", "torchjd"), ("mgda", "torchjd")}
    assert set(rows) == expected
    assert all(np.isfinite(r["median_ms"]) and r["median_ms"] > 0 for r in rows.values())
    assert rows[("equal_weighting", "aggregate")]["ratio_ew"] == 1.0
    assert "| w3 | 3 | mgda | aggregate |" in (tmp_path / "results.md").read_text()


def test_one_command_quick(tmp_path):
    """``python -m benchmarks --quick`` writes JSON, markdown and PNGs, with bf16 rows,
    peak memory and PEERS.md's LibMTL numbers."""
    import json

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import __main__ as bench

    args = ["--quick", "--out", str(tmp_path), "--quiet", "--no-torchjd"]
    args += ["--workloads", "w2,w3", "--methods", "equal_weighting", "--precision", "f32,bf16"]
    doc = bench.main(args)
    rows = {(r["workload"], r["method"], r["mode"], r["precision"]): r for r in doc["results"]}
    assert set(rows) == {
        ("w2", "equal_weighting", "loss", "f32"),
        ("w2", "equal_weighting", "loss", "bf16"),
        ("w3", "equal_weighting", "aggregate", "f32"),
    }
    for r in rows.values():
        assert np.isfinite(r["median_ms"]) and r["median_ms"] > 0, r
        assert r["peak_rss_mb"] > 0 and r["xla_temp_mb"] >= 0
    assert rows[("w2", "equal_weighting", "loss", "f32")]["ratio_ew"] == 1.0
    assert doc["meta"]["devices"] and doc["meta"]["backend"] == "cpu" and doc["meta"]["complete"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["results"]) == 3
    md = (tmp_path / "results.md").read_text()
    # LibMTL's W2 equal weighting (8.1 ms) comes from PEERS.md.
    assert "| w2 | 10 | equal_weighting | loss | bf16 |" in md and "| 8.1 |" in md
    assert (tmp_path / "w3_time_vs_k.png").stat().st_size > 0
    assert (tmp_path / "w3_memory_vs_k.png").stat().st_size > 0


def test_modes_follow_make_train_step():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import mtl_jax as mtl
    from benchmarks import __main__ as bench
    from benchmarks import workloads

    assert {"loss", "jacobian", "representation"} <= set(bench.train_modes())
    wl = workloads.gradnorm_toy(3)
    assert bench.modes_for(mtl.balancers.famo(num_tasks=3), wl) == ["loss"]
    modes = bench.modes_for(mtl.balancers.mgda(shared=wl.shared), wl)
    assert {"jacobian", "representation"} <= set(modes) and "loss" not in modes


def test_peer_table_parses_peers_md():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import __main__ as bench

    peers = bench.peer_table()
    assert peers[("libmtl", "mgda", "w1", 40)] == 1123.2
    assert peers[("torchjd", "upgrad", "w2", 10)] == 13.2
    assert ("libmtl", "aligned_mtl", "w1", 2) not in peers  # "fails"
    assert len({m for (_, m, _, _) in peers}) == 20


@pytest.fixture
def torch_workloads():
    """``benchmarks.torch_workloads`` (the test is skipped where torchjd is not installed)."""
    pytest.importorskip("torchjd")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import torch_workloads

    return torch_workloads


def test_one_torchjd_table(torch_workloads):
    """Every comparison takes torchjd's aggregators from ``torch_workloads.AGGREGATORS``;
    equal weighting is Mean in a training step and Sum on W3 (our W3 EW sums)."""
    import torch

    jac = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    w3 = torch_workloads.aggregator("equal_weighting", 2, workload="w3")
    w1 = torch_workloads.aggregator("equal_weighting", 2, workload="w1")
    np.testing.assert_allclose(w3(jac).numpy(), [4.0, 7.0])
    np.testing.assert_allclose(w1(jac).numpy(), [2.0, 3.5])
    assert torch_workloads.aggregator("famo", 2, workload="w3") is None
    with pytest.raises(ValueError, match="workload"):
        torch_workloads.aggregator("mgda", 2, workload="w4")


def test_every_torchjd_counterpart_is_one_of_our_methods_and_runs(torch_workloads):
    """Each entry of the same-run table names a registered balancer and aggregates a Jacobian."""
    import warnings

    import torch

    import mtl_jax as mtl

    jac = torch.tensor([[1.0, 2.0, 0.5, -1.0], [3.0, -5.0, 1.0, 0.0], [0.5, 1.0, 2.0, 1.0]])
    for name in torch_workloads.AGGREGATORS:
        assert name in mtl.balancers.METHODS, name
        with warnings.catch_warnings():  # Nash-MTL's cvxpy problem warns that it is not DPP
            warnings.simplefilter("ignore", UserWarning)
            out = torch_workloads.aggregator(name, 3, workload="w3")(jac)
        assert out.shape == (4,) and bool(torch.isfinite(out).all()), name
