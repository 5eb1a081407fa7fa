"""DSMT-Nets' data: feature bank, relevance filter, auxiliary targets and synthetic alarms."""

import math

import numpy as np
import pytest
from scipy import stats

from mtl_jax import data


def test_invalid_arguments():
    with pytest.raises(ValueError, match="fdr"):
        data.select_relevant_features(np.zeros((4, 2)), np.array([0, 1, 0, 1]), fdr=1.5)
    with pytest.raises(ValueError, match="labels"):
        data.auxiliary_targets(np.zeros((4, 2)), np.array([0, 1, 2, 1]), num_tasks=1)
    with pytest.raises(ValueError, match="num_windows"):
        data.icu_alarms(0, num_windows=0)


def test_feature_bank_matches_numpy(rng):
    x = rng.normal(size=(3, 2, 100)).astype(np.float32)
    x[0, 1] += np.linspace(0, 3, 100)
    x[2, 0] = 1.5  # constant stream: finite features
    f = np.asarray(data.time_series_features(x))
    names = data.TS_FEATURE_NAMES
    assert f.shape == (3, 2, len(names)) and len(names) >= 30 and np.isfinite(f).all()
    col = {n: f[..., i] for i, n in enumerate(names)}
    np.testing.assert_allclose(col["mean"], x.mean(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(col["std"], x.std(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(col["quantile_0.25"], np.quantile(x, 0.25, -1), rtol=1e-5)
    slope = np.array([[np.polyfit(np.arange(100), s, 1)[0] for s in w] for w in x])
    np.testing.assert_allclose(col["trend_slope"], slope, rtol=1e-3, atol=1e-6)
    s = x[1, 0]
    c = s - s.mean()
    np.testing.assert_allclose(
        col["autocorr_lag_4"][1, 0], np.mean(c[:-4] * c[4:]) / c.var(), rtol=1e-4
    )
    np.testing.assert_allclose(col["skewness"][:2], stats.skew(x[:2], -1), rtol=1e-3)
    np.testing.assert_allclose(col["kurtosis"][:2], stats.kurtosis(x[:2], -1), rtol=1e-3)
    zc = np.mean(np.sign(c[1:]) * np.sign(c[:-1]) < 0)
    np.testing.assert_allclose(col["zero_crossing_rate"][1, 0], zc, rtol=1e-6)
    bands = f[..., [i for i, n in enumerate(names) if n.startswith("band_energy")]]
    np.testing.assert_allclose(bands[:2].sum(-1), 1.0, rtol=1e-5)
    assert col["std"][2, 0] == 0 and col["autocorr_lag_1"][2, 0] == 0


def test_relevance_filter_finds_relevant_features(rng):
    n = 200
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 30))
    x[:, :5] += 1.2 * y[:, None]  # the first 5 features depend on the label
    x[:, 29] = 1.0  # a constant feature is never relevant
    rel = data.select_relevant_features(x, y)
    assert rel.relevant[:5].all() and rel.relevant[5:].sum() <= 1 and not rel.relevant[29]
    # The p-values are scipy's Mann-Whitney U and the selection is Benjamini-Yekutieli.
    ref = stats.mannwhitneyu(x[y == 1, 3], x[y == 0, 3]).pvalue
    np.testing.assert_allclose(rel.p_values[3], ref)
    aux = data.auxiliary_targets(
        x, np.where(np.arange(n) < 100, y, -1), num_tasks=3, choice="random", seed=1
    )
    assert aux.targets.shape == (n, 3) and set(aux.indices) <= set(range(5))
    np.testing.assert_allclose(aux.targets.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(aux.targets.std(0), 1.0, rtol=1e-4)
    top = data.auxiliary_targets(x, np.where(np.arange(n) < 100, y, -1), num_tasks=2, choice="top")
    order = np.argsort(top.relevance.p_values)
    np.testing.assert_array_equal(top.indices, order[:2])


def test_relevance_filter_drops_constant_features_before_by():
    """FRESH drops constant features before the tests; BY then counts only the tested ones.

    Hand-computed case: 10 negatives, 10 positives; feature 0 separates the classes
    perfectly, feature 1 is shifted by 4 ranks, feature 2 not at all, and 5 constant
    features. With m = 3 tested features the BY thresholds at q = 0.05 are
    k q / (m c(m)), c(3) = 1 + 1/2 + 1/3: 0.00909, 0.01818, 0.02727, so features 0
    and 1 are kept (p = 1.8e-4, 0.0091; feature 2 has p = 0.73). Counting the 5 constant
    features (m = 8, c(8) = 2.718) the second threshold would be 0.0046 and feature 1
    would be lost.
    """
    y = np.repeat([0, 1], 10)
    base = np.arange(10.0)
    informative = [
        np.concatenate([base, base + 10.5]),
        np.concatenate([base, base + 4.5]),
        np.concatenate([base, base + 0.5]),
    ]
    x = np.column_stack([*informative, *[np.full(20, c) for c in (0.0, 1.0, -3.0, 7.0, 2.5)]])
    x = x[:, [5, 0, 3, 1, 6, 2, 4, 7]]  # interleave the constant columns
    rel = data.select_relevant_features(x, y, fdr=0.05)
    np.testing.assert_array_equal(
        rel.constant, [True, False, True, False, True, False] + [True] * 2
    )
    # The raw p-values: the two-sided Mann-Whitney U in its normal approximation with
    # continuity correction (no ties), by hand: U = 100, 85, 55 of 10 x 10 pairs.
    sd = math.sqrt(10 * 10 * 21 / 12)
    by_hand = [math.erfc((abs(u - 50) - 0.5) / sd / math.sqrt(2)) for u in (100, 85, 55)]
    np.testing.assert_allclose(rel.p_values[[1, 3, 5]], by_hand, rtol=1e-10)
    np.testing.assert_array_equal(rel.p_values[rel.constant], 1.0)
    # Benjamini-Yekutieli by hand over the m = 3 tested features.
    q, m = 0.05, 3
    c_m = sum(1.0 / i for i in range(1, m + 1))
    thresholds = np.arange(1, m + 1) * q / (m * c_m)
    np.testing.assert_allclose(thresholds, [0.0090909, 0.0181818, 0.0272727], rtol=1e-5)
    p_sorted = np.sort(rel.p_values[~rel.constant])
    k = max(i + 1 for i in range(m) if p_sorted[i] <= thresholds[i])
    assert k == 2
    np.testing.assert_array_equal(rel.relevant, [False, True, False, True] + [False] * 4)
    # Counting the constant features as untested p = 1 (the old behaviour) would drop feature 1.
    m_all = x.shape[1]
    c_all = sum(1.0 / i for i in range(1, m_all + 1))
    assert p_sorted[1] > 2 * q / (m_all * c_all)
    # Every feature constant: nothing is tested, nothing kept.
    none = data.select_relevant_features(np.ones((20, 3)), y)
    assert not none.relevant.any() and none.constant.all()


def test_relevance_filter_controls_false_discoveries(rng):
    # Label-independent features: every selection is a false discovery. BY keeps
    # the expected false-discovery proportion (here: P(any selected)) below q.
    draws, hits, frac = 200, 0, []
    for _ in range(draws):
        x = rng.normal(size=(40, 20))
        y = np.repeat([0, 1], 20)
        rel = data.select_relevant_features(x, y, fdr=0.2)
        hits += bool(rel.relevant.any())
        frac.append(rel.relevant.mean())
    assert hits / draws <= 0.2 + 2 * np.sqrt(0.2 * 0.8 / draws)
    assert np.mean(frac) < 0.02


def test_icu_alarms_is_pure_and_informative():
    a, b = data.icu_alarms(7, num_windows=80), data.icu_alarms(7, num_windows=80)
    for u, w in zip(a, b):
        np.testing.assert_array_equal(u, w)
    assert a.windows.shape == (80, 3, 256) and a.windows.dtype == np.float32
    assert set(np.unique(a.labels)) == {0, 1} and a.alarm_type.max() < len(data.ALARM_TYPES)
    assert (a.windows[a.missing[:, 1] == 1, 1] == 0).all()
    # True alarms carry the arrhythmia in the pulse stream: it is weaker on average.
    pulse_std = a.windows[:, 1].std(-1)
    present = a.missing[:, 1] == 0
    assert pulse_std[present & (a.labels == 1)].mean() < pulse_std[present & (a.labels == 0)].mean()
