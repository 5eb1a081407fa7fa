"""The ``mtl-jax`` console script and its default experiment."""

import subprocess
import sys

import pytest

from mtl_jax.experiments import _cli, available


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "mtl_jax.experiments._cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "run" in out and "list" in out


def test_list_names_default(capsys):
    assert _cli.main(["list"]) == 0
    assert _cli.DEFAULT_EXPERIMENT in capsys.readouterr().out
    assert _cli.DEFAULT_EXPERIMENT in available()


def test_unknown_experiment():
    with pytest.raises(KeyError, match="unknown experiment"):
        _cli.main(["run", "no-such-experiment"])


@pytest.mark.reproduction
def test_default_experiment_runs(tmp_path, monkeypatch, repro_fast):
    from mtl_jax.experiments import toy_regression

    if repro_fast:  # a shorter run than the CLI's fast form keeps the suite quick
        monkeypatch.setattr(toy_regression, "FAST", (300, 5000))
    result = toy_regression.run(fast=repro_fast, out_dir=tmp_path, seed=0)
    assert [r[0] for r in result.rows] == ["equal_weighting", "uncertainty_weighting", "mgda"]
    for row in result.rows:
        assert row[1] > 0 and row[2] > 0
    # Training helps on the fast form too: most tasks' test losses fall below their
    # initial values (summary holds L_i / L_i(0) per task).
    ratios = result.summary["equal_weighting"]
    assert len(ratios) == 10
    assert sorted(ratios)[5] < 0.95
    assert result.files[0].exists() and result.files[0].stat().st_size > 10_000
    assert "Σ L_i/L_i(0)" in result.format_table()


def test_write_results_json(tmp_path):
    import json

    from mtl_jax.experiments._registry import ExperimentResult, seeds_from, write_results

    assert seeds_from(7, 3) == [7, 8, 9]
    result = ExperimentResult(
        title="t",
        columns=["m"],
        rows=[["a"]],
        seeds=[7, 8, 9],
        metric="accuracy",
        per_seed={"a": [0.5, 0.7, 0.9], "b": [0.1]},
        claim="a beats b",
        claim_held=True,
    )
    path = write_results(result, tmp_path, name="x", form="fast", wall_time_s=1.5)
    got = json.loads(path.read_text())
    assert got["experiment"] == "x" and got["form"] == "fast" and got["seeds"] == [7, 8, 9]
    assert got["methods"]["a"]["mean"] == pytest.approx(0.7)
    assert got["methods"]["a"]["std"] == pytest.approx(0.2)
    assert got["methods"]["a"]["per_seed"] == [0.5, 0.7, 0.9]
    assert got["methods"]["b"]["std"] == 0.0
    assert got["claim_held"] is True and got["wall_time_s"] == 1.5
