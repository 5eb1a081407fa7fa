"""``mtl-jax run dsmt`` end to end (fast form in CI, ``--full-repro`` for the full form)."""

import json

import numpy as np
import pytest

from mtl_jax.experiments import _cli, dsmt


@pytest.mark.reproduction
def test_dsmt_reproduction(repro_fast, tmp_path, capsys):
    argv = ["run", "dsmt", "--seed", "0", "--out", str(tmp_path / "out"), "--quiet"]
    argv += ["--data-dir", str(tmp_path / "tfds")]
    assert _cli.main(argv if repro_fast else [*argv, "--full"]) == 0
    out = capsys.readouterr().out
    cfg = dsmt.FAST if repro_fast else dsmt.FULL
    got = json.loads((tmp_path / "out" / "dsmt" / "results.json").read_text())
    png = tmp_path / "out" / "dsmt" / "dsmt.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert got["seeds"] == list(range(cfg["num_seeds"])) and got["claim"] == dsmt.CLAIM
    expected = {f"{m} n={n}" for m in dsmt.METHODS for n in cfg["budgets"]}
    assert set(got["methods"]) == expected
    for m in got["methods"].values():
        v = np.asarray(m["per_seed"])
        assert v.shape == (cfg["num_seeds"],) and ((v >= 0) & (v <= 1)).all()
        np.testing.assert_allclose(m["mean"], v.mean(), rtol=1e-6)
    # The builder's files were prepared into the data dir and the windows read from them.
    assert list((tmp_path / "tfds" / "icu_alarms").glob("*/*/*.array_record*"))
    # Every network learns from 100 labels (chance AUROC is 0.5).
    many = max(cfg["budgets"])
    for m in dsmt.METHODS:
        assert np.mean(got["methods"][f"{m} n={many}"]["per_seed"]) > 0.6, m
    # claim_held is what this run's per-seed numbers say.
    few = min(cfg["budgets"])
    gain = {
        n: np.asarray(got["methods"][f"DSMT k={dsmt.K_FEW} n={n}"]["per_seed"])
        - np.asarray(got["methods"][f"supervised n={n}"]["per_seed"])
        for n in (few, many)
    }
    se = gain[few].std(ddof=1) / np.sqrt(len(gain[few]))
    held = bool(gain[few].mean() > 2 * se and gain[few].mean() > gain[many].mean())
    assert got["claim_held"] == held and got["form"] == ("fast" if repro_fast else "full")
    assert "claim: " + dsmt.CLAIM in out and ("NOT HELD" not in out) == held
    # No direction is asserted: the fast form (5 seeds, 80 steps, 256 test windows)
    # measured on seeds 0-4 a 12-label gain of DSMT k=4 over the supervised network of
    # +0.041 ± 0.016 s.e. but a 100-label "gain" of -0.057 ± 0.036 (undertrained
    # networks), and a per-seed spread of 0.10 AUROC; with that spread its verdict on
    # unseen seeds is not reliable. The full form's table (claim held: +0.081 ± 0.014
    # at 12 labels, +0.020 ± 0.011 at 100) is in the experiment's docstring.
