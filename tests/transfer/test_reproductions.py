"""The transfer reproductions assert their papers' claims over seeds, with margins.

Fast form in CI, ``--full-repro`` for full size. Margins are set below the effects
measured on the fast form at ``--seed`` 0, 100 and 200 by more than their spread
over those runs (the numbers are in each test's comment).
"""

import numpy as np
import pytest

from mtl_jax.experiments import get
from mtl_jax.experiments._registry import seeds_from


def _check_result(res, seed=0):
    assert res.files[0].exists() and res.files[0].stat().st_size > 1000
    assert res.seeds == seeds_from(seed, len(res.seeds))
    assert res.metric and res.claim and isinstance(res.claim_held, bool)
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
    # Paper: every -SP regulariser beats L2. Paired per-seed differences, fast form
    # (10 seeds): mean +0.14 / +0.10 / ... at --seed 0 / 100 / 200 (see the report);
    # per-seed std ≈ 0.05, so the margin 0.04 is several spreads below the effect.
    for name in methods[1:]:
        diff = acc[name] - acc["L2"]
        assert diff.mean() > 0.04, (name, diff)
        assert np.sum(diff > 0) >= 0.8 * len(diff), (name, diff)
        assert res.summary["paired"][name]["wilcoxon_p"] < 0.05
    assert res.claim_held
    assert res.summary["anchor_acc"] > 0.9  # the pretrained features are good


@pytest.mark.reproduction
def test_curriculum_reproduction(repro_fast, tmp_path):
    res = get("transfer-curriculum").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    early = {k: np.asarray(v) for k, v in res.per_seed.items()}
    # Anti-curriculum is the slowest early: curriculum − anti at a quarter of
    # training is +0.18 (seed-mean) on the fast form at --seed 0; margin 0.08.
    assert (early["curriculum"] - early["anti"]).mean() > 0.08
    for name in ("vanilla", "random"):
        assert early[name].mean() > early["anti"].mean() + 0.04, name
    # Curriculum vs vanilla is within seed noise on this small task (not reproduced:
    # see the report); what holds is that the curriculum ends at least as well.
    final = res.summary
    assert final["curriculum"] > final["vanilla"] - 0.03


@pytest.mark.reproduction
def test_l2t_reproduction(repro_fast, tmp_path):
    res = get("transfer-l2t").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    acc = {k: np.asarray(v) for k, v in res.per_seed.items()}
    s = res.summary
    assert s["fit_corr"] > 0.0  # the reflection function learned something
    # Transfer with L2T's map beats the target-only classifier: +0.18 on the
    # fast form at --seed 0; margin 0.08.
    assert (acc["L2T"] - acc["target only"]).mean() > 0.08
