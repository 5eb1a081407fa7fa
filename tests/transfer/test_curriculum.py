"""Curriculum by transfer: pacing values, balanced ordering, sampler, teacher scores."""

import jax
import numpy as np
import pytest

from mtl_jax import transfer


def test_fixed_exponential_values():
    g = transfer.fixed_exponential_pacing(starting_percent=0.04, increase=1.9, step_length=100)
    steps = np.array([0, 99, 100, 199, 200, 450, 500, 599, 10_000])
    want = np.minimum(1.0, 0.04 * 1.9 ** np.floor(steps / 100))
    got = np.array([float(g(i)) for i in steps])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # jit + vmap over steps agree
    np.testing.assert_allclose(jax.jit(jax.vmap(g))(steps), want, rtol=1e-6)
    assert float(g(600)) == 1.0  # 0.04 * 1.9^6 = 1.88 -> capped


def test_varied_exponential_values():
    g = transfer.varied_exponential_pacing(starting_percent=0.1, increase=2.0, step_lengths=(2, 3))
    # steps: [0,2) k=0, [2,5) k=1, then length 3: [5,8) k=2, [8,11) k=3, [11,..) k=4
    want = [0.1, 0.1, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.8, 0.8, 0.8, 1.0, 1.0]
    got = [float(g(i)) for i in range(13)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # a single length reduces to fixed exponential
    h = transfer.varied_exponential_pacing(starting_percent=0.04, increase=1.9, step_lengths=(100,))
    f = transfer.fixed_exponential_pacing(starting_percent=0.04, increase=1.9, step_length=100)
    steps = np.arange(0, 800, 7)
    np.testing.assert_allclose(jax.vmap(h)(steps), jax.vmap(f)(steps), rtol=1e-6)


def test_single_step_and_no_pacing_values():
    g = transfer.single_step_pacing(starting_percent=0.2, step_length=50)
    got = [float(g(i)) for i in (0, 49, 50, 1000)]
    np.testing.assert_allclose(got, [0.2, 0.2, 1.0, 1.0], rtol=1e-6)
    assert float(transfer.no_pacing()(7)) == 1.0


def test_pacing_validation():
    with pytest.raises(ValueError, match=r"1\.5"):
        transfer.fixed_exponential_pacing(starting_percent=1.5)
    with pytest.raises(ValueError, match=r"0\.5"):
        transfer.fixed_exponential_pacing(starting_percent=0.1, increase=0.5)
    with pytest.raises(ValueError, match="step_length"):
        transfer.single_step_pacing(starting_percent=0.1, step_length=0)
    with pytest.raises(ValueError, match="step_lengths"):
        transfer.varied_exponential_pacing(starting_percent=0.1, increase=2.0, step_lengths=())


def test_order_is_balanced_and_sorted_within_class(rng):
    n = 90
    labels = np.repeat(np.arange(3), [30, 30, 30])
    rng.shuffle(labels)
    scores = rng.random(n)
    order = transfer.curriculum_order(scores, labels)
    assert sorted(order.tolist()) == list(range(n))
    for c in range(3):  # easy -> hard within each class
        s = scores[order][labels[order] == c]
        assert np.all(np.diff(s) <= 0)
    for prefix in range(3, n + 1, 3):  # every prefix of 3k examples is balanced
        counts = np.bincount(labels[order[:prefix]], minlength=3)
        assert counts.max() - counts.min() == 0
    anti = transfer.curriculum_order(scores, labels, mode="anti")
    for c in range(3):
        s = scores[anti][labels[anti] == c]
        assert np.all(np.diff(s) >= 0)
    rnd = transfer.curriculum_order(scores, labels, mode="random", seed=1)
    assert sorted(rnd.tolist()) == list(range(n)) and not np.array_equal(rnd, order)
    with pytest.raises(ValueError, match="bogus"):
        transfer.curriculum_order(scores, labels, mode="bogus")


def test_batch_sampler_respects_prefix(key):
    order = np.random.default_rng(0).permutation(200).astype(np.int32)
    pacing = transfer.fixed_exponential_pacing(starting_percent=0.1, increase=2.0, step_length=10)
    sample = jax.jit(
        lambda k, s: transfer.curriculum_batch(k, order, s, pacing=pacing, batch_size=16)
    )
    for step, n_avail in [(0, 20), (10, 40), (25, 80), (40, 200)]:
        seen = set()
        for k in jax.random.split(jax.random.fold_in(key, step), 30):
            idx = np.asarray(sample(k, step))
            assert len(set(idx.tolist())) == 16  # without replacement
            seen |= set(idx.tolist())
        assert seen <= set(order[:n_avail].tolist())
        assert len(seen) > 0.8 * n_avail  # and uniform enough to cover the prefix
    tiny = transfer.curriculum_batch(
        key,
        order,
        0,
        pacing=transfer.single_step_pacing(starting_percent=0.01, step_length=5),
        batch_size=8,
    )
    assert set(np.asarray(tiny).tolist()) <= set(order[:2].tolist())
    with pytest.raises(ValueError, match="batch_size"):
        transfer.curriculum_batch(key, order, 0, pacing=pacing, batch_size=0)


def test_difficulty_scores_match_sklearn_multinomial(rng):
    from sklearn.linear_model import LogisticRegression

    n = 150
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.7 * rng.normal(size=(n, 3)), axis=1).astype(np.int32)
    got = np.asarray(transfer.difficulty_scores(x, y, 3, l2=1e-2, num_iters=400))
    xs = (x - x.mean(0)) / x.std(0)
    clf = LogisticRegression(C=1.0 / (1e-2 * n), tol=1e-10, max_iter=10_000).fit(xs, y)
    want = clf.predict_proba(xs)[np.arange(n), y]
    np.testing.assert_allclose(got, want, atol=1e-3)
    with pytest.raises(ValueError, match="num_iters"):
        transfer.difficulty_scores(x, y, 3, num_iters=0)
