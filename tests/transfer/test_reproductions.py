"""The transfer reproductions assert their papers' claims over seeds, with margins.

Fast form in CI, ``--full-repro`` for full size. Margins are set below the effects
measured on the fast form at ``--seed`` 0, 100 and 200 by more than their spread
over those runs (the numbers are in each test's comment).
"""

import numpy as np
import pytest

from mtl_jax.experiments import _verdict, get
from mtl_jax.experiments._registry import seeds_from


def _check_result(res, seed=0):
    assert res.files[0].exists() and res.files[0].stat().st_size > 1000
    assert res.seeds == seeds_from(seed, len(res.seeds))
    assert res.metric and res.claim and res.claims
    # the summary verdict is the declared parts' verdicts, each a statistic
    assert res.claim_held is _verdict.claim_held(res.claims)
    for part in res.claims:
        assert part["verdict"] in _verdict.VERDICTS and part["statistic"] == "paired_t"
    for values in res.per_seed.values():
        assert len(values) == len(res.seeds) and np.all(np.isfinite(values))


@pytest.mark.reproduction
def test_l2sp_reproduction(repro_fast, tmp_path):
    res = get("transfer-l2sp").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    methods = ["L2", "L2-SP", "L2-SP-Fisher", "L1-SP", "GL-SP"]
    assert [r[0] for r in res.rows] == methods
    assert len(res.seeds) >= 10
    acc = {k: np.asarray(v) for k, v in res.per_seed.items()}
    # Paper: every -SP regulariser beats L2. Paired per-seed differences on the fast
    # form (10 seeds), --seed 0 / 100 / 200: L2-SP +0.140 / +0.102 / +0.094,
    # L2-SP-Fisher +0.144 / +0.092 / +0.090, L1-SP +0.146 / +0.104 / +0.111,
    # GL-SP +0.145 / +0.095 / +0.129; spread (std) of these run means <= 0.031, so the
    # margin 0.04 is above the spread and every run clears it by > 0.05.
    for name in methods[1:]:
        diff = acc[name] - acc["L2"]
        assert diff.mean() > 0.04, (name, diff)
        assert np.sum(diff > 0) >= 7, (name, diff)  # measured: 8 to 10 of 10
        assert res.summary["paired"][name]["wilcoxon_p"] < 0.05  # measured <= 0.01
    assert res.claim_held
    assert res.summary["anchor_acc"] > 0.9  # the pretrained features are good


@pytest.mark.reproduction
def test_curriculum_reproduction(repro_fast, tmp_path):
    res = get("transfer-curriculum").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    early = {k: np.asarray(v) for k, v in res.per_seed.items()}
    # Anti-curriculum is the slowest early. Seed means of curriculum − anti at a
    # quarter of training on the fast form, --seed 0 / 100 / 200: +0.18 / +0.09 /
    # +0.16 (spread 0.05); margin 0.05. vanilla − anti: +0.17 / +0.11 / +0.14 and
    # random − anti: +0.13 / +0.10 / +0.13 (spread 0.03); margin 0.04.
    assert (early["curriculum"] - early["anti"]).mean() > 0.05
    for name in ("vanilla", "random"):
        assert early[name].mean() > early["anti"].mean() + 0.04, name
    # Curriculum vs vanilla early is within seed noise here (+0.012 / −0.024 /
    # +0.018: not reproduced, see the report). The final accuracy of the
    # curriculum was above vanilla's on all three runs (+0.011 / +0.012 / +0.006),
    # too little to assert a gain; what is asserted is "ends at least as well".
    final = res.summary
    assert final["curriculum"] > final["vanilla"] - 0.03


@pytest.mark.reproduction
def test_l2t_reproduction(repro_fast, tmp_path):
    res = get("transfer-l2t").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    acc = {k: np.asarray(v) for k, v in res.per_seed.items()}
    s = res.summary
    assert s["fit_corr"] > 0.0  # the reflection function learned something
    # Transfer with L2T's map beats the target-only classifier. Fast form (24 test
    # pairs), --seed 0 / 100 / 200: +0.160 / +0.086 / +0.091 (spread 0.04); margin 0.05.
    assert (acc["L2T"] - acc["target only"]).mean() > 0.05
    # The paper's claim, L2T above every base algorithm, is not reproduced here:
    # L2T − PCA was +0.017 / −0.010 / −0.041 and L2T − SA +0.086 / +0.013 / +0.043
    # (see the report). What is asserted is that L2T stays close to the best base.
    best_base = max(acc[k].mean() for k in ("PCA", "TCA", "SA"))
    assert acc["L2T"].mean() > best_base - 0.08
