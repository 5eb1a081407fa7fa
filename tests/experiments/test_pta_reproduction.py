"""The PTA reproduction runs end to end (fast form in CI, ``--full-repro`` for full)."""

import numpy as np
import pytest

from mtl_jax.experiments import _verdict, get
from mtl_jax.experiments.pta import small_data_split


def test_small_data_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(3), [20, 25, 30])
    tr, va, te = small_data_split(labels, 0, num_train=10, num_val=4)
    np.testing.assert_array_equal(np.bincount(labels[tr]), [10, 10, 10])
    np.testing.assert_array_equal(np.bincount(labels[va]), [4, 4, 4])
    assert len(te) == 75 - 42
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(75))
    tr2, _, _ = small_data_split(labels, 1, num_train=10, num_val=4)
    assert not np.array_equal(tr, tr2)  # the seed draws the split
    with pytest.raises(ValueError, match="class 0"):
        small_data_split(labels, 0, num_train=16, num_val=4)


@pytest.mark.reproduction
def test_pta_reproduction(repro_fast, tmp_path):
    res = get("pta").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    assert res.files[0].exists() and res.files[0].stat().st_size > 1000
    assert len(res.seeds) >= 5 and all(len(v) == len(res.seeds) for v in res.per_seed.values())
    s = res.summary
    # every variant learns (chance: 90 % error single-task, ~40 % per attribute)
    for name in res.per_seed:
        assert s[name] < (15.0 if name.startswith("attr") else 20.0), (name, s[name])
    # claim_held is what this run's parts say; both forms run the one-decoder dropout
    # control, so the part that attributes MTL+PTA's gain is tested in the fast form too
    assert res.claim_held is _verdict.claim_held(res.claims)
    assert "attr MTL+HGD D=1" in res.per_seed
    assert res.claims[2]["verdict"] != "not tested" and res.claims[2]["n"] == len(res.seeds)
    assert "MTL+PTA vs MTL+HGD D=1" in s["paired"]
    # What the full form showed on seeds 0-19 and 100-119 (see the experiment's
    # docstring): PTA does not beat STL (claim (a) fails: independent and frozen
    # decoders hurt, greedy ones tie), and MTL + PTA-HGD beats MTL, but no more than
    # MTL with HGD's dropout and one decoder (claim (b) fails against that control).
    # Five seeds are too few to test those, so the fast form checks that extra
    # decoders do not break training and that PTA does not hurt MTL beyond the spread.
    assert s["HGD D=4"] < s["STL (D=1)"] + 2.5
    assert s["attr MTL+PTA-HGD D=4"] < s["attr MTL"] + 1.0
    if not repro_fast:
        paired = s["paired"]
        assert paired["MTL+PTA vs MTL"]["p"] < 0.05  # the part that reproduces
        assert paired["F D=4 vs STL"]["mean"] < 0  # frozen random decoders hurt
        assert res.claims[0]["verdict"] != "held"
