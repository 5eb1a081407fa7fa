"""`mtl-jax run celeba` end to end on TFDS mock data (nothing downloads)."""

import json

import pytest
import tensorflow_datasets as tfds

from mtl_jax.experiments._cli import main


def test_celeba_runs_end_to_end_on_mock_data(tmp_path, capsys):
    with tfds.testing.mock_data(num_examples=40):
        rc = main(["run", "celeba", "--balancer", "dwa", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    res = json.loads((tmp_path / "celeba" / "results.json").read_text())
    assert set(res["methods"]) == {"dwa", "majority baseline"}
    acc = res["methods"]["dwa"]["per_seed"][0]
    assert 0.0 <= acc <= 1.0 and res["claim_held"] is None
    assert res["claims"][0]["verdict"] == "inconclusive"  # 1 seed, 20 steps
    assert (tmp_path / "celeba" / "celeba.png").stat().st_size > 0


def test_celeba_rejects_bad_balancers_and_other_experiments_reject_the_flag(tmp_path):
    with pytest.raises(ValueError, match="balancer"):
        main(["run", "celeba", "--balancer", "nope", "--out", str(tmp_path)])
    assert main(["run", "toy-regression", "--balancer", "mgda", "--out", str(tmp_path)]) == 2
