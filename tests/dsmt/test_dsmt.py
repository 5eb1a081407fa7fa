"""DSMT-Nets: the network, the auxiliary-task construction, the label mask and the data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import mtl_jax as mtl
from mtl_jax import data, models, recipes


def _batch(key, b=8, s=3, t=96, k=3):
    k1, k2 = jax.random.split(key)
    return {
        "windows": jax.random.normal(k1, (b, s, t)),
        "missing": jnp.zeros((b, s)).at[0, 1].set(1.0),
        "labels": (jnp.arange(b) % 2).astype(jnp.float32),
        "label_mask": (jnp.arange(b) < b // 2).astype(jnp.float32),
        "aux_targets": jax.random.normal(k2, (b, k)),
        "key": jax.random.key(3),
    }


@pytest.mark.parametrize("mode,k", [("blocks", 3), ("naive", 3), ("blocks", 0)])
def test_shapes_and_state(mode, k, key):
    model = models.DSMTNet(num_aux_tasks=k, aux_mode=mode, channels=(4, 8), units=4)
    b = _batch(key, k=k)
    # Jitted: eager init/apply dispatch hundreds of small programs (tens of seconds).
    init = jax.jit(model.init, static_argnames="train")
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    v = init(key, b["windows"], b["missing"], train=False)
    assert set(v) == {"params", "batch_stats"}
    logit, aux = apply(v, b["windows"], b["missing"], train=False)
    assert logit.shape == (8,) and aux.shape == (8, k)
    # Training mode updates the BatchNorm statistics and needs the dropout/noise RNGs.
    rngs = {"dropout": jax.random.key(1), "noise": jax.random.key(2)}
    (l2, _), upd = apply(
        v, b["windows"], b["missing"], train=True, rngs=rngs, mutable=("batch_stats",)
    )
    assert l2.shape == (8,)
    changed = jax.tree.map(lambda a, c: bool(jnp.any(a != c)), v["batch_stats"], upd["batch_stats"])
    assert any(jax.tree.leaves(changed))
    # Blocks: one kernel per auxiliary task; naive: one shared layer with K outputs.
    if k and mode == "blocks":
        assert v["params"]["aux_dense"]["kernel"].shape[0] == k
    if k and mode == "naive":
        assert v["params"]["aux_out"]["kernel"].shape[-1] == k


def test_invalid_arguments(key):
    b = _batch(key)
    with pytest.raises(ValueError, match="aux_mode"):
        models.DSMTNet(num_aux_tasks=2, aux_mode="x").init(
            key, b["windows"], b["missing"], train=False
        )
    with pytest.raises(ValueError, match="num_aux_tasks"):
        recipes.dsmt_phase_weights(0, num_aux_tasks=-1, burn_in_steps=0, phase_steps=1)
    with pytest.raises(ValueError, match="fdr"):
        data.select_relevant_features(np.zeros((4, 2)), np.array([0, 1, 0, 1]), fdr=1.5)
    with pytest.raises(ValueError, match="labels"):
        data.auxiliary_targets(np.zeros((4, 2)), np.array([0, 1, 2, 1]), num_tasks=1)
    with pytest.raises(ValueError, match="num_windows"):
        data.icu_alarms(0, num_windows=0)


def test_phase_schedule():
    w = lambda s: np.asarray(
        recipes.dsmt_phase_weights(s, num_aux_tasks=2, burn_in_steps=3, phase_steps=2)
    )
    # Burn-in: auxiliary only; then alternating auxiliary / main phases of 2 steps.
    expected_main = [0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]
    for s, m in enumerate(expected_main):
        np.testing.assert_array_equal(w(s), [m, 1 - m, 1 - m])
    assert np.asarray(
        recipes.dsmt_phase_weights(5, num_aux_tasks=0, burn_in_steps=3, phase_steps=2)
    ).tolist() == [1.0]


def test_unlabelled_window_gives_no_main_gradient(key):
    model = models.DSMTNet(num_aux_tasks=3, channels=(4,), units=4)
    b = _batch(key)
    v = jax.jit(model.init, static_argnames="train")(key, b["windows"], b["missing"], train=False)

    def main_loss(params, batch):
        logit, aux = model.apply(
            {"params": params, "batch_stats": v["batch_stats"]},
            batch["windows"],
            batch["missing"],
            train=False,
        )
        kw = {k: batch[k] for k in ("labels", "label_mask", "aux_targets")}
        return recipes.dsmt_losses(logit, aux, **kw)

    g = jax.jit(jax.grad(lambda p, bb: main_loss(p, bb)[0]))
    g0 = g(v["params"], b)
    # Change everything about the unlabelled windows (mask 0): their label (even to
    # NaN) and their inputs. The main loss's gradient does not move ...
    unl = b["label_mask"] == 0
    b2 = dict(b)
    b2["labels"] = jnp.where(unl, jnp.nan, b["labels"])
    b2["windows"] = jnp.where(unl[:, None, None], 5.0 * b["windows"] + 1.0, b["windows"])
    g1 = g(v["params"], b2)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), g0, g1)
    # ... while the auxiliary losses do see the unlabelled windows.
    ga = jax.jit(jax.grad(lambda p, bb: main_loss(p, bb)[1]))
    diff = jax.tree.map(
        lambda a, c: float(jnp.max(jnp.abs(a - c))), ga(v["params"], b), ga(v["params"], b2)
    )
    assert max(jax.tree.leaves(diff)) > 1e-4
    # The masked mean is the mean BCE over the labelled windows (closed form).
    logit, _ = jax.jit(model.apply, static_argnames="train")(
        v, b["windows"], b["missing"], train=False
    )
    p = jax.nn.sigmoid(logit)
    y, m = b["labels"], b["label_mask"] > 0
    bce = -(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
    np.testing.assert_allclose(jax.jit(main_loss)(v["params"], b)[0], jnp.mean(bce[m]), rtol=1e-5)


def _np_losses(logit, aux, labels, mask, aux_targets):
    """dsmt_losses in NumPy float64: mean BCE over the labelled windows, per-task MSE."""
    z, y, m = (np.asarray(a, np.float64) for a in (logit, labels, mask))
    lab = m == 1
    bce = np.logaddexp(0.0, z[lab]) - y[lab] * z[lab]  # -y log s(z) - (1-y) log(1-s(z))
    mse = np.mean((np.asarray(aux, np.float64) - np.asarray(aux_targets, np.float64)) ** 2, 0)
    return np.concatenate([[bce.mean() if lab.any() else 0.0], mse])


def _call(kw):
    """dsmt_losses on a dict of its inputs."""
    kw = dict(kw)
    return recipes.dsmt_losses(kw.pop("logit"), kw.pop("aux"), **kw)


def _loss_inputs():
    r = np.random.default_rng(0)
    return {
        "logit": r.normal(size=6).astype(np.float32),
        "aux": r.normal(size=(6, 2)).astype(np.float32),
        "labels": np.array([1, 0, 1, -1, np.nan, 0], np.float32),
        "label_mask": np.array([1, 1, 1, 0, 0, 1], np.float32),
        "aux_targets": r.normal(size=(6, 2)).astype(np.float32),
    }


BAD_LOSS_INPUTS = {
    "mask 2": ("label_mask", 0, 2.0, r"label_mask must hold 0 .* or 1 .*; got 2\.0 at index 0"),
    "mask 0.5": ("label_mask", 3, 0.5, r"label_mask must hold .*; got 0\.5 at index 3"),
    "mask -1": ("label_mask", 4, -1.0, r"label_mask .*; got -1\.0 at index 4"),
    "label 3": ("labels", 2, 3.0, r"labels of labelled windows .* 0 or 1; got 3\.0 at index 2"),
    "label 0.5": ("labels", 0, 0.5, r"labels of labelled windows .*; got 0\.5 at index 0"),
    "label nan": ("labels", 1, np.nan, r"labels of labelled windows .*; got nan at index 1"),
}


def test_dsmt_losses_matches_numpy_and_accepts_bool_masks():
    x = _loss_inputs()
    want = _np_losses(x["logit"], x["aux"], x["labels"], x["label_mask"], x["aux_targets"])
    np.testing.assert_allclose(_call(x), want, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(_call)(x), want, rtol=1e-5)
    np.testing.assert_allclose(_call(dict(x, label_mask=x["label_mask"] > 0)), want, rtol=1e-5)
    # No labelled window: the main loss is 0 (not NaN), whatever the labels hold.
    none = dict(x, label_mask=np.zeros(6, np.float32), labels=np.full(6, 7.0, np.float32))
    assert float(_call(none)[0]) == 0.0


@pytest.mark.parametrize("case", list(BAD_LOSS_INPUTS))
def test_dsmt_losses_rejects_labels_and_masks_outside_the_contract(case):
    """Concrete inputs: a ValueError naming the argument and value. Traced: a NaN main loss."""
    arg, i, value, message = BAD_LOSS_INPUTS[case]
    x = _loss_inputs()
    x[arg] = x[arg].copy()
    x[arg][i] = value
    with pytest.raises(ValueError, match=message):
        _call(x)
    # Under jit the values are not visible: the main loss is NaN, never a plausible number,
    # while the auxiliary losses are untouched; its gradient stays finite.
    got = np.asarray(jax.jit(_call)(x))
    assert np.isnan(got[0]) and np.isfinite(got[1:]).all()
    grad = jax.jit(jax.grad(lambda z, kw: _call(dict(kw, logit=z))[0]))(x["logit"], x)
    assert np.isfinite(np.asarray(grad)).all()
    # And vmapped over a batch of problems, only the bad one is NaN.
    good = _loss_inputs()
    stacked = jax.tree.map(lambda a, b: np.stack([a, b]), good, x)
    both = np.asarray(jax.vmap(_call)(stacked))
    assert np.isfinite(both[0]).all() and np.isnan(both[1, 0])


def test_bad_labels_inside_the_dsmt_step_are_skipped_not_trained_on(key):
    """The NaN main loss of a bad traced batch is what the step's non-finite policy sees."""
    model = models.DSMTNet(num_aux_tasks=2, channels=(4,), units=4)
    b = _batch(key, k=2)
    v = jax.jit(model.init, static_argnames="train")(key, b["windows"], b["missing"], train=False)
    ts = recipes.make_dsmt_train_step(
        model, mtl.balancers.equal_weighting(), optax.sgd(1e-2), burn_in_steps=0, phase_steps=1
    )
    b.pop("key")
    # Step 1 is a main phase (burn-in 0, phases of 1 step): the main task is present.
    state = ts.init(v, key=0)._replace(step=jnp.asarray(1, jnp.int32))
    bad = dict(b, labels=b["labels"].at[0].set(3.0))  # window 0 is labelled
    new, metrics = ts.step(state, bad)
    assert not np.isfinite(np.asarray(metrics["losses"])[0])
    assert int(new.skipped) == 1
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, new.model_state, state.model_state)


def test_train_step_carries_batch_stats_and_follows_schedule(key):
    model = models.DSMTNet(num_aux_tasks=2, channels=(4,), units=4)
    b = _batch(key, k=2)
    b.pop("key")
    v = jax.jit(model.init, static_argnames="train")(key, b["windows"], b["missing"], train=False)
    ts = recipes.make_dsmt_train_step(
        model, mtl.balancers.equal_weighting(), optax.sgd(1e-2), burn_in_steps=1, phase_steps=1
    )
    state = ts.init(v, key=7)
    assert isinstance(state, mtl.training.TrainState)
    seen = []
    for i in range(3):
        old_params = state.params
        state, metrics = ts.step(state, b)
        seen.append(np.asarray(metrics["present"]))
        if i == 2:  # main phase: the auxiliary output layer gets no update (SGD)
            np.testing.assert_array_equal(
                state.params["aux_out"]["kernel"], old_params["aux_out"]["kernel"]
            )
    assert int(state.step) == 3
    # Burn-in (step 0), auxiliary phase (step 1), main phase (step 2), as presence.
    np.testing.assert_array_equal(seen, [[0, 1, 1], [0, 1, 1], [1, 0, 0]])
    mean0 = v["batch_stats"]["streams"]["BatchNorm_0"]["mean"]
    stats = state.model_state["batch_stats"]
    assert not np.allclose(stats["streams"]["BatchNorm_0"]["mean"], mean0)

    # One NaN in a batch: the step is skipped and the statistics stay finite and
    # unchanged, so evaluation still gives finite logits.
    bad = dict(b, windows=b["windows"].at[5, 0, 10].set(jnp.nan))
    new, metrics = ts.step(state, bad)
    assert not bool(metrics["finite"]) and int(new.skipped) == 1
    for x, y in zip(jax.tree.leaves(new.model_state), jax.tree.leaves(state.model_state)):
        np.testing.assert_array_equal(x, y)
    variables = {"params": new.params, **new.model_state}
    logit, _ = jax.jit(model.apply, static_argnames="train")(
        variables, b["windows"], b["missing"], train=False
    )
    assert np.isfinite(np.asarray(logit)).all()


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


@pytest.mark.parametrize("width,stride,t", [(7, 2, 128), (3, 1, 64), (7, 2, 65)])
def test_conv_matches_lax_convolution(width, stride, t, key):
    # The perception blocks' shifted-matmul convolution equals XLA's "SAME" convolution.
    from mtl_jax.models._dsmt import _Conv1D

    x = jax.random.normal(key, (4, t, 5))
    conv = _Conv1D(6, width, stride=stride)
    v = conv.init(key, x)
    ref = jax.lax.conv_general_dilated(
        x, v["params"]["kernel"], (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
    )
    np.testing.assert_allclose(conv.apply(v, x), ref, rtol=1e-5, atol=1e-5)


def test_streams_have_separate_perception_blocks(key):
    # One block per stream: changing stream 0 leaves stream 1's representation unchanged,
    # and the stacked parameters differ between streams.
    from mtl_jax.models._dsmt import _StreamEncoders

    enc = _StreamEncoders((4,), False)
    x = jax.random.normal(key, (6, 3, 96))
    v = enc.init(key, x)
    k = v["params"]["_Conv1D_0"]["kernel"]
    assert k.shape[0] == 3 and not np.allclose(k[0], k[1])
    y0 = enc.apply(v, x)
    y1 = enc.apply(v, x.at[:, 0].multiply(3.0))
    assert y0.shape == (6, 3, 4)
    np.testing.assert_allclose(y0[:, 1:], y1[:, 1:], rtol=1e-6)
    assert not np.allclose(y0[:, 0], y1[:, 0])


def _mgda_is_presence_aware():
    jac = {"w": jnp.asarray([[1.0, 0.5], [0.0, 0.0], [0.2, 1.0]])}
    present = jnp.asarray([True, False, True])
    b3, b2 = mtl.balancers.mgda(num_tasks=3), mtl.balancers.mgda(num_tasks=2)
    _, s3 = b3.update(jac, b3.init(None), task_losses=jnp.ones(3), task_presence=present)
    _, s2 = b2.update({"w": jac["w"][jnp.asarray([0, 2])]}, b2.init(None), task_losses=jnp.ones(2))
    return np.allclose(np.asarray(s3.weights)[[0, 2]], s2.weights, atol=1e-5)


def test_mgda_trains_every_dsmt_phase_as_the_present_tasks_alone(key):
    """The phases are presence: MGDA moves the parameters in every phase (on 0/1-multiplied
    losses the zero-gradient task was MGDA's min-norm point and SGD made no update), and each
    step equals MGDA's step on the present tasks alone."""
    if not _mgda_is_presence_aware():
        pytest.xfail("mgda is not presence-aware yet (balancer-level), so neither is the step")
    k = 2
    model = models.DSMTNet(num_aux_tasks=k, channels=(4,), units=4)
    b = _batch(key, k=k)
    b.pop("key")
    v = jax.jit(model.init, static_argnames="train")(key, b["windows"], b["missing"], train=False)
    opt = optax.sgd(1e-1)
    ts = recipes.make_dsmt_train_step(
        model, mtl.balancers.mgda(num_tasks=k + 1), opt, burn_in_steps=1, phase_steps=1
    )

    def alone(tasks):
        def loss_fn(params, batch, *, key, model_state):
            drop_key, noise_key = jax.random.split(key)
            (logit, aux), upd = model.apply(
                {"params": params, **model_state},
                batch["windows"],
                batch["missing"],
                train=True,
                rngs={"dropout": drop_key, "noise": noise_key},
                mutable=["batch_stats"],
            )
            losses = recipes.dsmt_losses(
                logit,
                aux,
                labels=batch["labels"],
                label_mask=batch["label_mask"],
                aux_targets=batch["aux_targets"],
            )
            return losses[jnp.asarray(tasks)], {"batch_stats": upd["batch_stats"]}

        return mtl.training.make_train_step(
            loss_fn, mtl.balancers.mgda(num_tasks=len(tasks)), opt, has_model_state=True
        )

    state = ts.init(v, key=0)
    for step, tasks in enumerate([[1, 2], [1, 2], [0]]):  # burn-in, auxiliary, main
        new, metrics = ts.step(state, b)
        ref = alone(tasks)
        ref_state = ref.init(state.params, key=0, model_state=state.model_state)
        ref_new, _ = ref(ref_state._replace(step=state.step), b)
        moved = max(
            float(jnp.max(jnp.abs(x - y)))
            for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))
        )
        assert moved > 1e-3, (step, moved)
        for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref_new.params)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        w = np.asarray(metrics["weights"])
        assert (w[[i for i in range(k + 1) if i not in tasks]] == 0).all()
        state = new


def test_a_main_phase_without_a_labelled_window_is_skipped(key):
    model = models.DSMTNet(num_aux_tasks=2, channels=(4,), units=4)
    b = _batch(key, k=2)
    b.pop("key")
    v = jax.jit(model.init, static_argnames="train")(key, b["windows"], b["missing"], train=False)
    ts = recipes.make_dsmt_train_step(
        model, mtl.balancers.equal_weighting(), optax.sgd(1e-2), burn_in_steps=0, phase_steps=1
    )
    state = ts.init(v, key=0)._replace(step=jnp.asarray(1, jnp.int32))  # a main phase
    new, metrics = ts.step(state, dict(b, label_mask=jnp.zeros_like(b["label_mask"])))
    np.testing.assert_array_equal(metrics["present"], [False, False, False])
    assert int(new.skipped) == 1
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
