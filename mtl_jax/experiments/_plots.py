"""Shared figure helpers for the packaged experiments (matplotlib, Agg backend).

The experiments' figures follow a few rules so that a reader can trust them:

* a comparison of a few methods over seeds is a *dot-and-interval* plot: every seed is
  drawn as a small dot next to the method's mean, and the interval is the stated
  aggregate :data:`AGGREGATE` (mean ± sample sd over seeds, ``ddof=1``), not a bar
  whose truncated axis exaggerates a small gap;
* a bar chart starts at zero (:func:`bars_from_zero`);
* the axis limits contain every drawn interval (:func:`contain`), so no error bar is
  clipped;
* a log axis labels its decades only, or exactly the values it is given
  (:func:`log_axis`), so minor tick labels never overlap;
* a reference line (a guide such as ``∝ 1/n``) names the method and point it is
  anchored on (:func:`reference_line`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "AGGREGATE",
    "bars_from_zero",
    "contain",
    "dots_and_intervals",
    "log_axis",
    "mean_sd",
    "pyplot",
    "reference_line",
    "save",
    "series_over_seeds",
]

#: The aggregate every dot-and-interval plot draws, stated in its legend or title.
AGGREGATE = "mean ± sd over seeds (ddof=1); small dots: single seeds"


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value) of ``values``."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("values is empty: nothing to aggregate")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def dots_and_intervals(
    ax,
    positions: Sequence[float],
    values: Sequence[Sequence[float]],
    *,
    color=None,
    label: str | None = None,
    horizontal: bool = False,
    seed_offset: float = 0.08,
) -> list[tuple[float, float]]:
    """Draws each group's seeds as small dots and its mean ± sd (ddof=1) as a dot and bar.

    Args:
      ax: the matplotlib axes.
      positions: one coordinate per group on the category axis.
      values: per group, its per-seed values.
      color: the colour of the group's markers (matplotlib's cycle if ``None``).
      label: the legend label of the series (its mean markers; the seeds are unlabelled).
      horizontal: values on the x axis and groups on the y axis.
      seed_offset: how far beside the mean the seeds' dots are drawn.

    Returns:
      The drawn intervals ``(mean - sd, mean + sd)`` per group; the axis limits are
      widened to contain them and every seed (:func:`contain`).
    """
    if len(positions) != len(values):
        raise ValueError(
            f"positions ({len(positions)}) and values ({len(values)}) must have the same length"
        )
    stats = [mean_sd(v) for v in values]
    means = [m for m, _ in stats]
    sds = [s for _, s in stats]
    kw = dict(fmt="o", capsize=3, ms=6, label=label, zorder=3)
    if color is not None:
        kw["color"] = color
    if horizontal:
        cont = ax.errorbar(means, positions, xerr=sds, **kw)
    else:
        cont = ax.errorbar(positions, means, yerr=sds, **kw)
    color = cont[0].get_color()
    for p, v in zip(positions, values):
        v = np.asarray(v, np.float64).ravel()
        at = np.full(v.size, p + seed_offset)
        xy = (v, at) if horizontal else (at, v)
        ax.plot(*xy, ".", color=color, alpha=0.45, ms=4, zorder=2)
    intervals = [(m - s, m + s) for m, s in stats]
    everything = np.concatenate([np.asarray(v, np.float64).ravel() for v in values])
    lo = min([a for a, _ in intervals] + [float(everything.min())])
    hi = max([b for _, b in intervals] + [float(everything.max())])
    contain(ax, lo, hi, axis="x" if horizontal else "y")
    return intervals


def series_over_seeds(ax, xs: Sequence[float], series: dict, *, log_x: bool = True) -> None:
    """Draws each method's metric against ``xs`` as dot-and-interval points joined by a line.

    Args:
      ax: the matplotlib axes.
      xs: the x values (e.g. label budgets), labelled exactly on the x axis.
      series: method name -> one sequence of per-seed values per x.
      log_x: a logarithmic x axis (labelled at ``xs`` only, see :func:`log_axis`).

    The methods are drawn side by side around each x (a few per cent apart) so that
    their intervals do not hide each other; each gets a legend entry.
    """
    num = len(series)
    for j, (name, per_x) in enumerate(series.items()):
        if len(per_x) != len(xs):
            raise ValueError(f"series {name!r} has {len(per_x)} points for {len(xs)} x values")
        shift = 0.04 * (j - (num - 1) / 2)
        at = [x * (1 + shift) if log_x else x + shift * (xs[-1] - xs[0]) / 4 for x in xs]
        dots_and_intervals(ax, at, per_x, color=f"C{j}", label=name, seed_offset=0.0)
        ax.plot(at, [mean_sd(v)[0] for v in per_x], color=f"C{j}", lw=0.8)
    if log_x:
        log_axis(ax, "x", ticks=xs)
        contain(ax, min(xs) * 0.9, max(xs) * 1.1, axis="x")


def bars_from_zero(ax, positions, heights, *, yerr=None, **kwargs):
    """``ax.bar`` whose value axis starts at zero and contains every error bar.

    Args:
      ax: the matplotlib axes.
      positions, heights: as for ``ax.bar``.
      yerr: symmetric error bars (or ``None``).
      **kwargs: passed to ``ax.bar``.

    Returns:
      ``ax.bar``'s container.
    """
    bars = ax.bar(positions, heights, yerr=yerr, **kwargs)
    h = np.asarray(heights, np.float64)
    e = np.zeros_like(h) if yerr is None else np.asarray(yerr, np.float64)
    contain(ax, min(0.0, float((h - e).min())), max(0.0, float((h + e).max())), axis="y")
    if h.min() >= 0 and float((h - e).min()) >= 0:  # the bars' base is the axis' bottom
        ax.set_ylim(0.0, ax.get_ylim()[1])
    return bars


def contain(ax, lo: float, hi: float, *, axis: str = "y", pad: float = 0.05) -> None:
    """Widens ``ax``'s ``axis`` limits (never narrows them) to contain ``[lo, hi]`` with a margin.

    On a log axis the margin is multiplicative and ``lo`` must be positive.
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    get, set_ = (ax.get_xlim, ax.set_xlim) if axis == "x" else (ax.get_ylim, ax.set_ylim)
    scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
    a, b = get()
    if scale == "log":
        if lo <= 0:
            raise ValueError(f"a log axis cannot contain lo={lo}")
        f = (hi / lo) ** pad if hi > lo else 1.5
        lo, hi = lo / f, hi * f
    else:
        m = pad * (hi - lo) if hi > lo else max(abs(hi), 1e-12) * pad
        lo, hi = lo - m, hi + m
    set_(min(a, lo), max(b, hi))


def log_axis(ax, axis: str = "y", *, ticks: Sequence[float] | None = None) -> None:
    """Makes ``axis`` logarithmic with readable tick labels.

    Without ``ticks`` the labels are the decades, plus 2× and 5× where the current
    limits span under three decades (so a narrow axis still has several labels), and
    the minor ticks are unlabelled; call it after drawing the data. With ``ticks``
    exactly those values are labelled (as plain numbers) and there are no minor
    ticks, so no two labels overlap.
    """
    from matplotlib import ticker

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    ax_ = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    if ticks is None:
        lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
        narrow = lo > 0 and np.log10(hi / lo) < 3
        subs = (1.0, 2.0, 5.0) if narrow else (1.0,)
        ax_.set_major_locator(ticker.LogLocator(base=10.0, subs=subs, numticks=8))
        if narrow:
            ax_.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax_.set_minor_locator(ticker.LogLocator(base=10.0, subs=np.arange(2, 10), numticks=12))
        ax_.set_minor_formatter(ticker.NullFormatter())
    else:
        ticks = [float(t) for t in ticks]
        ax_.set_major_locator(ticker.FixedLocator(ticks))
        ax_.set_major_formatter(ticker.FixedFormatter([f"{t:g}" for t in ticks]))
        ax_.set_minor_locator(ticker.NullLocator())
        ax_.set_minor_formatter(ticker.NullFormatter())


def reference_line(ax, x, y, *, what: str, anchor: str, **kwargs):
    """Draws a reference line and labels it with what it is and what it is anchored on.

    Args:
      ax: the matplotlib axes.
      x, y: the line's points.
      what: what the line shows (e.g. ``"∝ 1/n"``).
      anchor: the method and point it passes through (e.g. ``"BBSE-hard at n=100"``).
      **kwargs: passed to ``ax.plot`` (default: a black dashed line).

    Returns:
      The drawn ``Line2D``.
    """
    kwargs = {"color": "k", "ls": "--", "lw": 1, **kwargs}
    (line,) = ax.plot(x, y, label=f"{what} (anchored on {anchor})", **kwargs)
    return line


def save(fig, path: str | pathlib.Path, *, dpi: int = 100, tight: bool = True) -> pathlib.Path:
    """Lays out, writes and closes ``fig``; returns ``path``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
