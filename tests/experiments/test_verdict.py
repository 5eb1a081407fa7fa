"""Tests of the shared verdict statistics on synthetic numbers with known answers."""

import numpy as np
import pytest
from scipy import stats

from mtl_jax.experiments import _verdict
from mtl_jax.experiments._verdict import ClaimPart


def test_paired_t_matches_scipy_and_holds_on_a_clear_gain():
    rng = np.random.default_rng(0)
    b = rng.normal(0.7, 0.05, 10)
    a = b + 0.05 + rng.normal(0, 0.01, 10)
    part = ClaimPart("a > b", statistic="paired_t")
    out = part.test(a, b)
    ref = stats.ttest_rel(a, b, alternative="greater")
    assert out["value"] == pytest.approx(ref.statistic, rel=1e-12)
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    ci = stats.ttest_rel(a, b).confidence_interval(0.9)
    assert out["interval"] == pytest.approx([ci.low, ci.high], rel=1e-10)
    assert out["effect_size"] == pytest.approx(np.mean(a - b))
    assert out["verdict"] == "held"


def test_paired_t_less_and_opposite_effect_is_not_held():
    d = np.array([0.3, 0.25, 0.4, 0.35, 0.28])  # a clearly above b
    held = ClaimPart("a < b", alternative="less").test(d)
    assert held["verdict"] == "not held"
    assert held["p_value"] == pytest.approx(stats.ttest_1samp(d, 0, alternative="less").pvalue)
    assert ClaimPart("a > b").test(d)["verdict"] == "held"


def test_noise_is_inconclusive_not_a_sign():
    # the case: a positive noisy mean (t ~ 0.8) must not read as "held"
    d = np.array([0.02, -0.01, 0.03, -0.02, 0.01, 0.015])
    out = ClaimPart("gain > 0").test(d)
    assert out["effect_size"] > 0 and 0 < out["value"] < 2
    assert out["verdict"] == "inconclusive"


def test_interval_short_of_the_claimed_effect_is_not_held():
    d = np.array([0.010, 0.012, 0.009, 0.011, 0.010, 0.0105])  # tiny but significant gain
    assert ClaimPart("gain > 0").test(d)["verdict"] == "held"
    # claimed gain of at least 0.02: held by neither, but the 90% interval excludes it
    out = ClaimPart("gain > 0.02", min_effect=0.02).test(d - 0.02 + 0.0)  # shift: d' < 0
    assert out["verdict"] == "not held"
    part = ClaimPart("gain >= 0.05", min_effect=0.05)
    out = part.test(np.array([0.01, 0.03, -0.01, 0.02, 0.0]))
    assert out["interval"][1] < 0.05 and out["verdict"] == "not held"


def test_too_few_seeds_and_untestable_forms_are_inconclusive():
    assert ClaimPart("x").test([0.5])["verdict"] == "inconclusive"
    sign = ClaimPart("x", statistic="sign")
    assert sign.min_seeds() == 5  # 0.5**4 = 0.0625 > 0.05
    out = sign.test([1.0, 2.0, 3.0, 4.0])
    assert out["verdict"] == "inconclusive" and "at least 5" in out["reason"]
    out = ClaimPart("x").test([1.0, 1.1, 0.9, 1.2], untestable="80 steps leave it undertrained")
    assert out["p_value"] < 0.05 and out["verdict"] == "inconclusive"
    assert "80 steps" in out["reason"]
    nt = _verdict.not_tested(ClaimPart("noise domain"), "the fast form omits the noise domain")
    assert nt["verdict"] == "not tested"


def test_sign_test_matches_binomial():
    d = np.array([0.1, 0.2, -0.05, 0.3, 0.1, 0.2, 0.15, 0.0])  # 6 wins of 7 non-zero
    out = ClaimPart("x", statistic="sign").test(d)
    assert out["value"] == 6
    assert out["p_value"] == pytest.approx(stats.binomtest(6, 7, 0.5, alternative="greater").pvalue)
    assert out["verdict"] == "inconclusive"  # p = 0.0625
    assert ClaimPart("x", statistic="sign").test(np.abs(d) + 0.01)["verdict"] == "held"
    assert ClaimPart("x", statistic="sign").test(-np.abs(d) - 0.01)["verdict"] == "not held"


def test_bootstrap_interval_and_verdicts():
    rng = np.random.default_rng(1)
    d = rng.normal(0.5, 0.2, 20)
    out = ClaimPart("x", statistic="bootstrap").test(d)
    ref = stats.bootstrap((d,), np.mean, confidence_level=0.9, method="percentile", random_state=0)
    lo, hi = out["interval"]
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.02)
    assert out["verdict"] == "held" and out["p_value"] is None
    assert ClaimPart("x", statistic="bootstrap").test(-d)["verdict"] == "not held"
    unpaired = ClaimPart("x", statistic="bootstrap", paired=False)
    assert unpaired.test(d + 1.0, d[:10])["verdict"] == "held"


def test_welch_unpaired_matches_scipy():
    a, b = np.array([1.0, 1.2, 0.9, 1.1, 1.3]), np.array([0.5, 0.7, 0.6, 0.4])
    out = ClaimPart("x", paired=False).test(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert out["verdict"] == "held"


def test_detectable_effect_power():
    part = ClaimPart("x", sd=1.0)
    # G*Power: one-sided paired t, alpha .05, power .8, d = 0.5 needs n = 27 (power .8118)
    assert part.detectable(27) == pytest.approx(0.49, abs=0.01)
    # the power at the detectable effect, by simulation
    n, delta = 6, part.detectable(6)
    rng = np.random.default_rng(0)
    d = rng.normal(delta, 1.0, (20000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    assert np.mean(t > stats.t.isf(0.05, n - 1)) == pytest.approx(0.8, abs=0.01)
    assert part.detectable(1) is None and ClaimPart("x").detectable(10) is None
    assert part.detectable(5) > part.detectable(20)
    sign = ClaimPart("x", statistic="sign", sd=1.0)
    assert sign.detectable(4) is None and sign.detectable(10) > part.detectable(10)
    decl = part.declaration([5, 20])
    assert decl["detectable_effect"]["5"] == pytest.approx(part.detectable(5))


def test_summary_and_validation():
    h, n, i = ({"verdict": v} for v in ("held", "not held", "inconclusive"))
    assert _verdict.claim_held([h, h]) is True
    assert _verdict.claim_held([h, n, i]) is False
    assert _verdict.claim_held([h, i]) is None
    assert _verdict.claim_held([]) is None
    assert _verdict.verdict_label(None, [h, i]) == "inconclusive"
    assert _verdict.verdict_label(None, [{"verdict": "not tested"}]) == "not tested"
    with pytest.raises(ValueError, match="statistic"):
        ClaimPart("x", statistic="ttest")
    with pytest.raises(ValueError, match="alpha"):
        ClaimPart("x", alpha=0.7)
    with pytest.raises(ValueError, match="non-finite"):
        ClaimPart("x").test([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="equal lengths"):
        ClaimPart("x").test([1.0, 2.0], [1.0])
    out = ClaimPart("x").test([0.1, 0.1, 0.1])
    assert out["verdict"] == "inconclusive" and "no spread" in out["reason"]
