"""Every experiment's figure, drawn from small synthetic inputs (no training).

Each plot function is fed inputs of the shape its experiment gives it; the figure it
saves is captured and checked against the rules of :mod:`mtl_jax.experiments._plots`:
every axes has a title and axis labels, a legend wherever several series are drawn,
bar axes start at zero, no error bar or band leaves the axes, no two tick labels
overlap, and reference lines name their anchor.
"""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from mtl_jax.experiments import _plots

RNG = np.random.default_rng(0)


@pytest.fixture
def saved(monkeypatch):
    """The figures saved while the test runs (captured before they are closed)."""
    figs = []
    real = Figure.savefig

    def savefig(self, *args, **kwargs):
        self.canvas.draw()
        figs.append(_describe(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def _colour(artist):
    c = artist.get_color() if hasattr(artist, "get_color") else artist.get_facecolor()
    return tuple(np.round(matplotlib.colors.to_rgba_array(c)[0], 3))


def _describe(fig):
    """What the checks need, read while the figure is alive and drawn."""
    renderer = fig.canvas.get_renderer()
    out = {"suptitle": fig._suptitle.get_text() if fig._suptitle else "", "axes": []}
    out["fig_legend"] = bool(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data():
            continue
        colours = set()
        for line in ax.get_lines():
            if len(line.get_xdata()) and line.get_label() != "_nolegend_":
                colours.add(_colour(line))
        for coll in ax.collections:
            if isinstance(coll, PolyCollection | LineCollection):
                continue  # bands and error bars share their line's colour
            if len(coll.get_offsets()):
                colours.add(_colour(coll))
        bars, errs = [], []
        for cont in ax.containers:
            if isinstance(cont, BarContainer):
                bars.append(cont)
                colours.add(_colour(cont.patches[0]))
            if isinstance(cont, ErrorbarContainer):
                for lc in cont.lines[2]:
                    errs.extend(np.asarray(seg) for seg in lc.get_segments())
        bands = [
            p.get_paths()[0].vertices
            for p in ax.collections
            if isinstance(p, PolyCollection) and p.get_paths()
        ]
        labels = []
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for minor in (False, True):
                locs = axis.get_minorticklocs() if minor else axis.get_majorticklocs()
                for loc, t in zip(locs, axis.get_ticklabels(minor=minor)):
                    inside = lo * (1 - 1e-9) <= loc <= hi * (1 + 1e-9) or lo <= loc <= hi
                    if inside and t.get_visible() and t.get_text().strip():
                        labels.append((t.get_text(), t.get_window_extent(renderer)))
        out["axes"].append(
            {
                "title": ax.get_title() or ax.get_title("left"),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "colours": colours,
                "legend": ax.get_legend() is not None,
                "bar_bottoms": [ax.get_ylim()[0] for _ in bars],
                "errs": errs,
                "bands": bands,
                "xlim": sorted(ax.get_xlim()),
                "ylim": sorted(ax.get_ylim()),
                "ticklabels": labels,
                "line_labels": [ln.get_label() for ln in ax.get_lines()],
            }
        )
    return out


def check(fig):
    """The rules every experiment figure obeys."""
    assert fig["axes"], "the figure draws nothing"
    for ax in fig["axes"]:
        name = ax["title"] or fig["suptitle"]
        assert ax["title"].strip() or fig["suptitle"].strip(), "an axes without a title"
        assert ax["xlabel"].strip() and ax["ylabel"].strip(), f"{name}: unlabelled axis"
        if len(ax["colours"]) > 1:
            assert ax["legend"] or fig["fig_legend"], f"{name}: several series, no legend"
        for bottom in ax["bar_bottoms"]:
            assert bottom <= 0.0, f"{name}: a bar axis starts at {bottom}, above zero"
        (x0, x1), (y0, y1) = ax["xlim"], ax["ylim"]
        tol_x, tol_y = 1e-9 * max(1, abs(x1 - x0)), 1e-9 * max(1, abs(y1 - y0))
        for seg in ax["errs"] + ax["bands"]:
            assert seg[:, 0].min() >= x0 - tol_x and seg[:, 0].max() <= x1 + tol_x, (
                f"{name}: an interval leaves the x axis {x0, x1}: {seg[:, 0]}"
            )
            assert seg[:, 1].min() >= y0 - tol_y and seg[:, 1].max() <= y1 + tol_y, (
                f"{name}: an interval is clipped by the y axis {y0, y1}: {seg[:, 1]}"
            )
        for (ta, a), (tb, b) in itertools.combinations(ax["ticklabels"], 2):
            assert not a.overlaps(b), f"{name}: tick labels {ta!r} and {tb!r} overlap"


# --------------------------------------------------------------------------- helpers


def test_checker_catches_a_truncated_bar_axis_and_a_clipped_error_bar(saved, tmp_path):
    """The checks above fail on the defects they guard against."""
    fig, ax = plt.subplots()
    ax.bar([0, 1], [0.85, 0.87], yerr=[0.01, 0.3], label="a")
    ax.set_ylim(0.845, 1.0)
    ax.set(title="t", xlabel="x", ylabel="y")
    _plots.save(fig, tmp_path / "bad.png")
    with pytest.raises(AssertionError, match="above zero"):
        check(saved[-1])
    fig, ax = plt.subplots()
    ax.errorbar([0, 1], [0.9, 0.95], yerr=[0.01, 0.2])
    ax.set_ylim(0, 1.0)
    ax.set(title="t", xlabel="x", ylabel="y")
    _plots.save(fig, tmp_path / "bad2.png")
    with pytest.raises(AssertionError, match="clipped"):
        check(saved[-1])


def test_checker_catches_overlapping_minor_log_labels(saved, tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([12, 25, 50, 100], [0.6, 0.7, 0.75, 0.8])
    ax.set_xscale("log")
    ax.set(title="t", xlabel="x", ylabel="y")
    _plots.save(fig, tmp_path / "bad.png")
    with pytest.raises(AssertionError, match="overlap"):
        check(saved[-1])
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([12, 25, 50, 100], [0.6, 0.7, 0.75, 0.8])
    _plots.log_axis(ax, "x", ticks=[12, 25, 50, 100])
    ax.set(title="t", xlabel="x", ylabel="y")
    _plots.save(fig, tmp_path / "good.png")
    check(saved[-1])


def test_log_axis_labels_a_narrow_range_more_than_once(saved, tmp_path):
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.plot([0, 1], [0.5, 2.5], label="a")
    _plots.log_axis(ax, "y")
    ax.set(title="t", xlabel="x", ylabel="y")
    _plots.save(fig, tmp_path / "n.png")
    fig = saved[-1]
    check(fig)
    ys = {t for t, box in fig["axes"][0]["ticklabels"] if box.x0 < 100}  # the y labels
    assert {"0.5", "1", "2"} <= ys, ys


def test_helpers(saved, tmp_path):
    fig, ax = plt.subplots()
    iv = _plots.dots_and_intervals(ax, [0, 1], [[1.0, 2.0, 3.0], [5.0]], label="m")
    np.testing.assert_allclose(iv, [(1.0, 3.0), (5.0, 5.0)])
    _plots.bars_from_zero(ax, [2], [4.0], yerr=[9.0], label="b")
    assert ax.get_ylim()[0] <= -5.0 and ax.get_ylim()[1] >= 13.0
    line = _plots.reference_line(ax, [0, 1], [1, 2], what="∝ 1/n", anchor="A at n=1")
    assert line.get_label() == "∝ 1/n (anchored on A at n=1)"
    ax.legend()
    ax.set(title="t", xlabel="x", ylabel="y")
    _plots.save(fig, tmp_path / "h.png")
    check(saved[-1])
    with pytest.raises(ValueError, match="positions"):
        _plots.dots_and_intervals(ax, [0], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="axis"):
        _plots.log_axis(ax, "z")
    with pytest.raises(ValueError, match="empty"):
        _plots.mean_sd([])


# --------------------------------------------------------------------------- experiments


def _one(saved, path):
    assert path.exists() and path.stat().st_size > 5_000, path
    assert len(saved) == 1
    check(saved[0])
    return saved[0]


def test_toy_regression(saved, tmp_path):
    from mtl_jax.experiments import toy_regression as tr

    k, t, seeds = 4, 6, 2
    methods = ("equal_weighting", "mgda")
    curves = {m: [RNG.uniform(0.1, 2.0, (t, k)) for _ in range(seeds)] for m in methods}
    weights = {m: [RNG.uniform(0.5, 2.0, (t, k)) for _ in range(seeds)] for m in methods}
    weights["mgda"] = [1e-5 * w for w in weights["mgda"]]  # MGDA's loss+ scale (~1e-5)
    weights["mgda"][0][:, 1] = 0.0  # and its exact zeros
    w0 = {m: np.ones(k) for m in methods}
    claims = [{"name": "p", "verdict": "inconclusive"}]
    path = tr._plot(curves, weights, w0, np.array([1.0, 3, 10, 30]), claims, tmp_path / "t.png")
    fig = _one(saved, path)
    assert "seeds" in fig["suptitle"] and "min-max" in fig["suptitle"]
    for ax in fig["axes"]:  # the zeros are drawn at the stated floor, inside the axes
        for band in ax["bands"]:
            assert band[:, 1].min() >= tr.WEIGHT_FLOOR * (1 - 1e-6)
        if ax["title"] == "mgda: task weights":  # relative weights: not all at the floor
            assert max(band[:, 1].max() for band in ax["bands"]) > 0.3
        assert len(ax["ticklabels"]) >= 4, ax["ticklabels"]  # several labels per axes


def test_dsmt(saved, tmp_path):
    from mtl_jax.experiments import dsmt

    budgets = (12, 25, 50, 100)
    per_seed = {
        f"{m} n={n}": list(RNG.uniform(0.55, 0.9, 3)) for m in dsmt.METHODS for n in budgets
    }
    fig = _one(saved, dsmt._plot(per_seed, budgets, tmp_path / "dsmt.png"))
    labels = [t for ax in fig["axes"] for t, _ in ax["ticklabels"]]
    assert {"12", "25", "50", "100"} <= set(labels)


def _cells(datasets, key, names, num_seeds=3, num_tasks=2):
    return [
        {
            "dataset": d,
            key: a,
            "balancer": b,
            "accuracy": RNG.uniform(0.8, 0.9, (num_seeds, num_tasks)),
        }
        for d in datasets
        for a in names
        for b in ("equal_weighting", "upgrad")
    ]


def test_architectures(saved, tmp_path):
    from mtl_jax.experiments import architectures

    rows = _cells(("multi_digits", "toy"), "architecture", ("hps", "mtan", "cross_stitch"))
    _one(saved, architectures._plot(rows, tmp_path / "a.png"))


def test_partial_labels(saved, tmp_path):
    from mtl_jax.experiments import partial_labels

    rows = _cells(("multi_digits",), "variant", partial_labels.VARIANTS)
    _one(saved, partial_labels._plot(rows, tmp_path / "p.png"))


def test_pta(saved, tmp_path):
    from mtl_jax.experiments import pta

    names = ("STL (D=1)", "HGD D=1", "I D=4", "HGD D=4", "attr MTL", "attr MTL+PTA-HGD D=4")
    per_seed = {m: list(RNG.uniform(6.0, 10.0, 5)) for m in names}
    per_seed["HGD D=4"][0] = 20.0  # an outlying seed stays inside the axes
    _one(saved, pta._plot(per_seed, tmp_path))


def test_balancers(saved, tmp_path):
    from mtl_jax.experiments import balancers

    methods = ("equal_weighting", "mgda", "uncertainty_weighting", "upgrad")
    results = {
        ds: {m: {"values": list(RNG.uniform(0.5, 1.5, 3))} for m in methods}
        for ds in ("multi_digits", "toy_regression")
    }
    _one(saved, balancers._plot(results, tmp_path / "b.png"))


def test_reform_synthetic(saved, tmp_path):
    from mtl_jax.experiments import reform_synthetic as rs

    ns = (6, 10, 15, 25, 40, 80, 160)
    per_seed = {f"{m} N={n}": list(RNG.uniform(0.5, 0.95, 4)) for m in rs.METHODS for n in ns}
    fig = _one(saved, rs._plot(per_seed, ns, tmp_path / "r.png"))
    assert {str(n) for n in ns} <= {t for ax in fig["axes"] for t, _ in ax["ticklabels"]}


def test_label_shift_digits(saved, tmp_path):
    from mtl_jax.experiments import label_shift_digits as ls

    ns = (100, 200, 400, 800)
    curves = {
        shift: {m: [RNG.uniform(0.5, 2.0, 3) / n for n in ns] for m in ls.METHODS}
        for shift in ("Dirichlet α=0.1", "Dirichlet α=1")
    }
    fig = _one(saved, ls._plot(curves, ns, 808, tmp_path / "l.png"))
    guide = [lab for ax in fig["axes"] for lab in ax["line_labels"] if "1/n" in lab]
    assert guide and all(f"anchored on {ls.GUIDE_ANCHOR}" in g for g in guide), guide


def test_transfer_curriculum(saved, tmp_path):
    from mtl_jax.experiments import transfer_curriculum as tc

    evals = np.arange(0, 201, 20)
    curves = {c: RNG.uniform(0.2, 0.9, (3, len(evals))) for c in tc.CONDITIONS}
    _one(saved, tc._plot(curves, evals, len(evals) // 4, tmp_path / "c.png"))
    labels = {lab for ax in saved[0]["axes"] for lab in ax["line_labels"]}
    assert any("step 40" in lab for lab in labels), labels


def test_transfer_l2t(saved, tmp_path):
    from mtl_jax.experiments import transfer_l2t

    accs = {k: RNG.uniform(0.7, 1.0, 6) for k in ("target only", "PCA", "TCA", "SA", "L2T")}
    accs["L2T"][0] = 1.0  # an interval reaching past 1.0 must not be clipped
    _one(saved, transfer_l2t._plot(accs, tmp_path / "t.png"))


def test_mstn_digits(saved, tmp_path):
    from mtl_jax.experiments import mstn_digits

    domains = tuple(mstn_digits.DOMAINS)
    per_seed = {
        f"{d} / {m}": list(RNG.uniform(0.6, 1.0, 3)) for d in domains for m in mstn_digits.METHODS
    }
    _one(saved, mstn_digits._plot(per_seed, domains, tmp_path / "m.png"))


def test_celeba(saved, tmp_path):
    from mtl_jax.experiments import celeba

    _one(saved, celeba._plot([0.88], [0.80], "upgrad", tmp_path / "c.png"))
