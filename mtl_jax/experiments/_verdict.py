"""Verdicts as statistics: a claim is a comparison over seeds with a declared test.

An experiment declares each part of the paper's claim it checks *before* it runs,
as a :class:`ClaimPart`: which two quantities it compares over the seeds (paired
when both come from the same seed), in which direction, the statistic (a paired
t-test, a sign test, or a percentile-bootstrap interval of the mean difference),
the level ``alpha``, the smallest effect that counts as the claimed one
(``min_effect``), and the per-seed standard deviation ``sd`` of the differences it
expects. From ``sd`` and a form's number of seeds :meth:`ClaimPart.detectable`
gives the smallest true mean difference the form detects with 80 % power, so a
fast form's declaration says up front how large an effect it can see.

:meth:`ClaimPart.test` returns a three-valued verdict on the per-seed differences
``d_s = a_s - b_s`` (for ``alternative="less"``, the claim is ``E[d] < 0``):

* ``"held"``: the one-sided test in the claimed direction rejects at ``alpha``
  (for the bootstrap: the one-sided ``1 - alpha`` bound lies beyond 0);
* ``"not held"``: the one-sided test in the opposite direction rejects at
  ``alpha``, or the two-sided ``1 - 2 alpha`` interval of the mean difference
  excludes the claimed effect ``min_effect`` (it lies entirely short of it);
* ``"inconclusive"``: neither; or too few seeds for the statistic to reach
  ``alpha`` at all (fewer than 2 for the t-test, fewer than
  ``ceil(log2(1/alpha))`` for the sign test); or the experiment says the form
  cannot test the part (``untestable=`` reason: the numbers are still recorded).

:func:`not_tested` records a part a form omits altogether, and :func:`claim_held`
summarises the parts: ``True`` when all held, ``False`` when any did not hold,
``None`` otherwise.

The paired t statistic is ``t = mean(d) / (sd(d) / sqrt(n))`` with ``sd`` the
sample standard deviation (``ddof=1``), referred to Student's t with ``n - 1``
degrees of freedom (Student 1908); the sign test counts ``d_s > 0`` among the
non-zero differences against Binomial(n, 1/2) (Dixon & Mood 1946).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "STATISTICS",
    "VERDICTS",
    "ClaimPart",
    "claim_held",
    "not_tested",
    "verdict_label",
]

#: The statistics a claim part may declare.
STATISTICS = ("paired_t", "sign", "bootstrap")
#: The verdicts a claim part can get (``"not tested"``: the form omits the part).
VERDICTS = ("held", "not held", "inconclusive", "not tested")
#: Power at which :meth:`ClaimPart.detectable` reports the smallest detectable effect.
POWER = 0.8
#: Bootstrap resamples (fixed seed, so the verdict is reproducible).
NUM_RESAMPLES = 10_000


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    return alpha


@dataclasses.dataclass(frozen=True)
class ClaimPart:
    """One declared comparison of a claim: ``a`` vs ``b`` over seeds, and how it is tested.

    Args:
      name: the comparison in words, e.g. ``"AUROC of DSMT k=4 > supervised at n=12"``.
      statistic: ``"paired_t"``, ``"sign"`` or ``"bootstrap"``.
      alternative: ``"greater"`` (the claim is ``E[a - b] > 0``) or ``"less"``.
      alpha: the level of the one-sided tests, in (0, 0.5).
      min_effect: the smallest mean difference (in the claimed direction, >= 0) that
        counts as the claimed effect; ``"not held"`` when the ``1 - 2 alpha`` interval
        lies entirely short of it.
      sd: the per-seed standard deviation of ``a - b`` the experiment expects (for
        :meth:`detectable`); ``None`` when not stated.
      paired: whether ``a`` and ``b`` come from the same seeds (then the test is on
        ``a_s - b_s``); unpaired parts compare the two means with Welch's t-test
        (``statistic="paired_t"`` only) or resample each group (``"bootstrap"``).
    """

    name: str
    statistic: str = "paired_t"
    alternative: str = "greater"
    alpha: float = 0.05
    min_effect: float = 0.0
    sd: float | None = None
    paired: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.alternative not in ("greater", "less"):
            raise ValueError(f"alternative must be 'greater' or 'less', got {self.alternative!r}")
        _check_alpha(self.alpha)
        if not (math.isfinite(self.min_effect) and self.min_effect >= 0):
            raise ValueError(f"min_effect must be finite and >= 0, got {self.min_effect}")
        if self.sd is not None and not (math.isfinite(self.sd) and self.sd > 0):
            raise ValueError(f"sd must be finite and > 0 (or None), got {self.sd}")
        if not self.paired and self.statistic == "sign":
            raise ValueError("statistic='sign' needs paired=True")

    # -- declaration ---------------------------------------------------------------

    def min_seeds(self) -> int:
        """The fewest seeds with which the statistic can reach ``alpha`` at all."""
        if self.statistic == "sign":
            return math.ceil(math.log2(1.0 / self.alpha))
        return 2 if self.paired else 4

    def detectable(self, num_seeds: int, sd: float | None = None) -> float | None:
        """Smallest true mean difference detected with 80 % power with ``num_seeds`` seeds.

        For the t-test (and, as its normal-theory stand-in, the bootstrap) it solves
        ``P(T' > t_{1-alpha, n-1}) = 0.8`` for the mean difference ``delta``, where
        ``T'`` is noncentral t with ``n - 1`` degrees of freedom and noncentrality
        ``delta sqrt(n) / sd``. For the sign test it solves for the shift of a
        normal difference whose ``P(d > 0)`` gives 80 % power to the exact binomial
        test. ``None`` when no ``sd`` is known or the seeds can never reach ``alpha``.

        Args:
          num_seeds: the number of seeds (per group, for unpaired parts).
          sd: the per-seed sd of the differences; defaults to the declared ``sd``.
        """
        from scipy import optimize, stats

        sd = self.sd if sd is None else float(sd)
        n = int(num_seeds)
        if sd is None or n < self.min_seeds():
            return None
        if self.statistic == "sign":
            k = int(stats.binom.isf(self.alpha, n, 0.5)) + 1  # reject when wins >= k
            if stats.binom.sf(k - 1, n, 0.5) > self.alpha:
                return None

            def power_sign(delta):
                return stats.binom.sf(k - 1, n, stats.norm.cdf(delta / sd)) - POWER

            return float(optimize.brentq(power_sign, 0.0, 50.0 * sd))
        df = n - 1 if self.paired else 2 * n - 2
        scale = math.sqrt(n) if self.paired else math.sqrt(n / 2.0)
        crit = stats.t.isf(self.alpha, df)

        def power_t(delta):
            return stats.nct.sf(crit, df, delta * scale / sd) - POWER

        return float(optimize.brentq(power_t, 0.0, 100.0 * sd))

    def declaration(self, num_seeds: Sequence[int] = ()) -> dict[str, Any]:
        """The declared test as JSON, with the detectable effect for each seed count."""
        return {
            "name": self.name,
            "statistic": self.statistic,
            "alternative": self.alternative,
            "alpha": self.alpha,
            "min_effect": self.min_effect,
            "sd": self.sd,
            "paired": self.paired,
            "detectable_effect": {str(n): self.detectable(n) for n in num_seeds},
        }

    # -- test ----------------------------------------------------------------------

    def test(
        self,
        a: Sequence[float],
        b: Sequence[float] | None = None,
        *,
        untestable: str | None = None,
    ) -> dict[str, Any]:
        """Tests the part on per-seed values ``a`` and ``b`` (or differences ``a`` alone).

        Args:
          a: per-seed values of the first quantity (or, with ``b=None``, the per-seed
            differences ``a - b`` already taken).
          b: per-seed values of the second quantity, aligned by seed when paired.
          untestable: a reason this form cannot decide the part (e.g. too few steps);
            the statistic is still computed and recorded, the verdict is
            ``"inconclusive"``.

        Returns:
          A JSON-serialisable dict: ``name``, ``statistic``, ``value`` (t, the number
          of wins, or the mean difference), ``p_value`` (one-sided, claimed
          direction; ``None`` for the bootstrap), ``interval`` (two-sided
          ``1 - 2 alpha`` interval of the mean difference), ``effect_size`` (the mean
          difference ``mean(a) - mean(b)``), ``n``, ``alpha``, ``alternative``,
          ``min_effect``, ``detectable_effect`` (:meth:`detectable` at this ``n`` and
          the declared ``sd``), ``verdict`` and, when not decided, ``reason``.

        Raises:
          ValueError: non-finite values, or ``a`` and ``b`` of different lengths
            when paired.
        """
        a = np.asarray(a, dtype=np.float64).ravel()
        b = None if b is None else np.asarray(b, dtype=np.float64).ravel()
        for label, v in (("a", a), ("b", b)):
            if v is not None and not np.all(np.isfinite(v)):
                raise ValueError(f"{self.name}: {label} has non-finite values: {v.tolist()}")
        if b is not None and self.paired and a.shape != b.shape:
            raise ValueError(
                f"{self.name}: paired values need equal lengths, got {a.size} and {b.size}"
            )
        if not self.paired and b is None:
            raise ValueError(f"{self.name}: an unpaired part needs both a and b")
        sign = 1.0 if self.alternative == "greater" else -1.0
        if self.paired:
            d = a if b is None else a - b
            n = int(d.size)
            effect = float(d.mean()) if n else float("nan")
        else:
            n = int(min(a.size, b.size))
            effect = float(a.mean() - b.mean())
        out: dict[str, Any] = {
            "name": self.name,
            "statistic": self.statistic,
            "value": None,
            "p_value": None,
            "interval": None,
            "effect_size": effect if math.isfinite(effect) else None,
            "n": n,
            "alpha": self.alpha,
            "alternative": self.alternative,
            "min_effect": self.min_effect,
            "detectable_effect": self.detectable(n) if n else None,
        }
        reason = None
        if n < self.min_seeds():
            reason = (
                f"{n} seed(s): a {self.statistic} test at alpha={self.alpha} needs at "
                f"least {self.min_seeds()}"
            )
        else:
            stat, p_claim, p_opposite, interval = self._compute(a, b, sign)
            out.update(value=stat, p_value=p_claim, interval=interval)
            if p_claim is None and p_opposite is None and interval is None:
                reason = "the differences have no spread; the test is undefined"
            else:
                lo, hi = interval if interval is not None else (None, None)
                short = (
                    interval is not None
                    and (hi < self.min_effect if sign > 0 else lo > -self.min_effect)
                    and self.min_effect > 0
                )
                if self.statistic == "bootstrap":
                    held = lo > 0 if sign > 0 else hi < 0
                    opposite = hi < 0 if sign > 0 else lo > 0
                else:
                    held = p_claim < self.alpha
                    opposite = p_opposite < self.alpha
                verdict = "held" if held else "not held" if opposite or short else "inconclusive"
                out["verdict"] = verdict
        if reason is not None:
            out["verdict"] = "inconclusive"
            out["reason"] = reason
        elif untestable:
            out["verdict"] = "inconclusive"
            out["reason"] = str(untestable)
        return out

    def _compute(self, a, b, sign):
        """(statistic, one-sided p claimed, one-sided p opposite, interval) or Nones."""
        from scipy import stats

        level = 1.0 - 2.0 * self.alpha
        if self.statistic == "paired_t" and self.paired:
            d = a if b is None else a - b
            if _no_spread(d):
                return None, None, None, None
            res = stats.ttest_1samp(d, 0.0)
            t = float(res.statistic)
            df = d.size - 1
            ci = res.confidence_interval(level)
            p_claim = float(stats.t.sf(sign * t, df))
            return t, p_claim, float(stats.t.sf(-sign * t, df)), [float(ci.low), float(ci.high)]
        if self.statistic == "paired_t":
            if _no_spread(a) and _no_spread(b):
                return None, None, None, None
            res = stats.ttest_ind(a, b, equal_var=False)
            t = float(res.statistic)
            ci = res.confidence_interval(level)
            df = float(res.df)
            p_claim = float(stats.t.sf(sign * t, df))
            return t, p_claim, float(stats.t.sf(-sign * t, df)), [float(ci.low), float(ci.high)]
        if self.statistic == "sign":
            d = a if b is None else a - b
            nz = d[d != 0]
            if nz.size == 0:
                return None, None, None, None
            wins = int(np.sum(sign * nz > 0))
            p_claim = float(stats.binomtest(wins, nz.size, 0.5, alternative="greater").pvalue)
            p_opp = float(stats.binomtest(wins, nz.size, 0.5, alternative="less").pvalue)
            return float(wins), p_claim, p_opp, _bootstrap_interval(d, None, level)
        if self.paired:
            d = a if b is None else a - b
            interval, diff = _bootstrap_interval(d, None, level), float(np.mean(d))
        else:
            interval, diff = _bootstrap_interval(a, b, level), float(np.mean(a) - np.mean(b))
        if interval[0] == interval[1]:
            return None, None, None, None
        return diff, None, None, interval


def _no_spread(x: np.ndarray) -> bool:
    """Whether ``x``'s values are equal up to rounding (a t statistic is then undefined)."""
    return float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def _bootstrap_interval(a, b, level: float) -> list[float]:
    """Percentile bootstrap interval of ``mean(a)`` (or ``mean(a) - mean(b)``), fixed seed."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, a.size, (NUM_RESAMPLES, a.size))
    means = a[idx].mean(axis=1)
    if b is not None:
        jdx = rng.integers(0, b.size, (NUM_RESAMPLES, b.size))
        means = means - b[jdx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def not_tested(part: ClaimPart, reason: str) -> dict[str, Any]:
    """The record of a part this form omits (``verdict: "not tested"``), naming why."""
    if not reason:
        raise ValueError("not_tested needs a reason naming what the form omits")
    return {
        "name": part.name,
        "statistic": part.statistic,
        "value": None,
        "p_value": None,
        "interval": None,
        "effect_size": None,
        "n": 0,
        "alpha": part.alpha,
        "alternative": part.alternative,
        "min_effect": part.min_effect,
        "verdict": "not tested",
        "reason": str(reason),
    }


def claim_held(parts: Sequence[dict[str, Any]]) -> bool | None:
    """The summary of tested parts: True if all held, False if any did not, else None."""
    verdicts = [p["verdict"] for p in parts]
    for v in verdicts:
        if v not in VERDICTS:
            raise ValueError(f"unknown verdict {v!r}; expected one of {VERDICTS}")
    if not verdicts:
        return None
    if "not held" in verdicts:
        return False
    if all(v == "held" for v in verdicts):
        return True
    return None


def verdict_label(held: bool | None, parts: Sequence[dict[str, Any]] = ()) -> str:
    """The printed summary verdict: ``"held"``, ``"not held"``, ``"inconclusive"``, ...

    ``"not tested"`` when every part was omitted (or no part was declared).
    """
    if held is True:
        return "held"
    if held is False:
        return "not held"
    if parts and any(p["verdict"] != "not tested" for p in parts):
        return "inconclusive"
    return "not tested"
