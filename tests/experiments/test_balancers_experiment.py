"""``mtl-jax run balancers``: the fast form end to end through the CLI, and its options."""

import json

import numpy as np
import pytest

from mtl_jax.experiments import _cli, _registry
from mtl_jax.experiments import balancers as experiment


def test_fast_form_end_to_end_through_the_cli(tmp_path, capsys):
    argv = ["run", "balancers", "--balancer", "mgda,auto_lambda", "--out", str(tmp_path)]
    assert _cli.main([*argv, "--quiet"]) == 0
    out_dir = tmp_path / "balancers"
    res = json.loads((out_dir / "results.json").read_text())
    assert res["experiment"] == "balancers" and res["form"] == "fast"
    assert res["seeds"] == [0, 1] and res["wall_time_s"] > 0
    assert res["claim_held"] is None and res["verdict"] == "not tested"
    assert "No claim" in res["claim"]
    assert (out_dir / "balancers.png").stat().st_size > 0
    expected = {f"{d}/{m}" for d in experiment.DATASETS for m in ("mgda", "auto_lambda")}
    assert set(res["methods"]) == expected
    for key, m in res["methods"].items():
        v = np.asarray(m["per_seed"])
        assert v.shape == (2,) and np.all(np.isfinite(v)), key
        np.testing.assert_allclose(m["mean"], v.mean(), rtol=1e-6)
        np.testing.assert_allclose(m["std"], v.std(ddof=1), rtol=1e-6, atol=1e-12)
        if key.startswith("multi_digits"):  # two 10-way tasks: chance is 0.1
            assert 0.3 < m["mean"] <= 1.0, key
        elif key.startswith("digits_attributes"):  # binary attributes
            assert 0.6 < m["mean"] <= 1.0, key
        else:  # Σ_i L_i/L_i(0) over ten tasks: every ratio positive and finite
            assert 0.0 < m["mean"] < 100.0, key
    assert "No claim" in capsys.readouterr().out


def test_help_says_it_is_a_comparison(capsys):
    assert _cli.main(["run", "balancers", "--help"]) == 0
    text = capsys.readouterr().out
    assert "No claim" in text and "--balancer" in text
    assert _registry.get("balancers").num_seeds == (2, 3)


@pytest.mark.parametrize("value", ["", "mgda,nope", " , "])
def test_bad_method_list_names_the_argument(value):
    with pytest.raises(ValueError, match="balancer must be a comma-separated list"):
        experiment._methods(value, fast=True)


def test_default_method_lists():
    assert experiment._methods(None, fast=True) == experiment.FAST_METHODS
    assert experiment._methods(None, fast=False) == tuple(__import__("mtl_jax").balancers.names())
