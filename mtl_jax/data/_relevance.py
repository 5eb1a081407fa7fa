"""Relevance filtering and auxiliary-task construction for DSMT-Nets.

Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027. The auxiliary
tasks are features of each window that are *relevant* to the main label on the
few labelled windows, found by the FRESH procedure (Christ et al., 2016,
https://arxiv.org/abs/1610.07717): a univariate Mann–Whitney U test per feature
against the binary label, with Benjamini–Yekutieli false-discovery-rate control.
These run once on the host, so they use NumPy and SciPy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["AuxiliaryTargets", "FeatureRelevance", "auxiliary_targets", "select_relevant_features"]


class FeatureRelevance(NamedTuple):
    """The result of :func:`select_relevant_features`.

    Attributes:
      relevant: ``[F]`` bool, the features kept at the requested FDR.
      p_values: ``[F]`` the Mann–Whitney U two-sided p-values (1 for a feature
        that is constant on the labelled windows: it is not tested).
      constant: ``[F]`` bool, the features constant on the labelled windows,
        dropped before the tests and not counted in the FDR correction.
    """

    relevant: np.ndarray
    p_values: np.ndarray
    constant: np.ndarray


class AuxiliaryTargets(NamedTuple):
    """The result of :func:`auxiliary_targets`.

    Attributes:
      targets: ``[N, k]`` float32, the chosen features standardised over all
        ``N`` windows (labelled and unlabelled).
      indices: ``[k]`` the chosen feature columns.
      relevance: the :class:`FeatureRelevance` the choice was made from.
    """

    targets: np.ndarray
    indices: np.ndarray
    relevance: FeatureRelevance


def select_relevant_features(features, labels, fdr: float = 0.05) -> FeatureRelevance:
    r"""Keeps the features whose distribution differs between the two label classes.

    Features constant on the labelled windows carry no information about the
    label and are dropped first, as FRESH does. For each of the remaining
    :math:`m` columns ``j`` a two-sided Mann–Whitney U test compares the values
    on the positive and the negative windows, giving :math:`p_j`. The
    Benjamini–Yekutieli procedure (valid under any dependence between the tests)
    then keeps the features of the :math:`k` smallest p-values, with :math:`k`
    the largest rank such that :math:`p_{(k)} \le \tfrac{k}{m \, c(m)} q`,
    :math:`c(m) = \sum_{i=1}^m 1/i`, which bounds the expected fraction of
    irrelevant features among those kept by the FDR level :math:`q`. This is the
    FRESH filter (Christ et al., 2016, https://arxiv.org/abs/1610.07717) that
    DSMT-Nets use (Schwab et al., ICML 2018, https://arxiv.org/abs/1802.05027).
    Counting the constant features in :math:`m` would only make the filter more
    conservative than published.

    Args:
      features: ``[n, F]`` feature values of the labelled windows.
      labels: ``[n]`` binary labels (0/1 or bool), both classes present.
      fdr: the false-discovery-rate level :math:`q \in (0, 1)`.

    Returns:
      A :class:`FeatureRelevance` with the kept features, the raw p-values and
      the constant (untested) features.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"features must be [n, F]; got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},); got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be binary 0/1; got values {np.unique(y)}")
    if not 0.0 < fdr < 1.0:
        raise ValueError(f"fdr must be in (0, 1); got {fdr}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    pos, neg = x[y == 1], x[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"labels need both classes; got {len(pos)} positive, {len(neg)} negative")
    from scipy import stats  # here: importing it costs ~1 s, paid only by its users

    constant = np.ptp(x, axis=0) == 0
    tested = ~constant
    p = np.ones(x.shape[1])
    relevant = np.zeros(x.shape[1], dtype=bool)
    if tested.any():
        res = stats.mannwhitneyu(pos[:, tested], neg[:, tested], alternative="two-sided")
        p[tested] = res.pvalue
        # The correction counts only the tested features (m of them), as FRESH does.
        relevant[tested] = stats.false_discovery_control(p[tested], method="by") <= fdr
    return FeatureRelevance(relevant=relevant, p_values=p, constant=constant)


def auxiliary_targets(
    features,
    labels,
    *,
    num_tasks: int,
    fdr: float = 0.05,
    choice: str = "random",
    seed: int = 0,
) -> AuxiliaryTargets:
    r"""Builds ``k`` standardised auxiliary regression targets for DSMT-Nets.

    The relevance filter (:func:`select_relevant_features`) runs on the
    labelled windows (``labels >= 0``). ``choice="random"`` draws ``k`` of the
    relevant features uniformly (seeded), as the authors do;
    ``choice="top"`` takes the ``k`` with the smallest p-values. If fewer than
    ``k`` are relevant, the rest are filled with the non-relevant ones of
    smallest p-value (constant features are never chosen). Each chosen column is
    standardised over *all* windows: :math:`(f - \mu)/\sigma` with
    :math:`\mu, \sigma` over labelled and unlabelled windows together.

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.

    Args:
      features: ``[N, F]`` features of every window (e.g. the flattened output
        of :func:`time_series_features`).
      labels: ``[N]`` ints: 1/0 for labelled windows, -1 for unlabelled ones.
      num_tasks: ``k >= 0``, how many auxiliary tasks to build.
      fdr: the FDR level of the relevance filter.
      choice: ``"random"`` or ``"top"``.
      seed: the seed of the random choice.

    Returns:
      :class:`AuxiliaryTargets` (``targets`` is ``[N, k]``).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, F]; got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},); got {y.shape}")
    if not np.isin(y, (-1, 0, 1)).all():
        raise ValueError(f"labels must be -1 (unlabelled), 0 or 1; got values {np.unique(y)}")
    if not isinstance(num_tasks, int) or num_tasks < 0:
        raise ValueError(f"num_tasks must be an int >= 0; got {num_tasks!r}")
    if choice not in ("random", "top"):
        raise ValueError(f"choice must be 'random' or 'top'; got {choice!r}")
    lab = y >= 0
    rel = select_relevant_features(x[lab], y[lab], fdr=fdr)
    usable = np.ptp(x, axis=0) > 0
    candidates = np.flatnonzero(rel.relevant & usable)
    order = np.argsort(rel.p_values, kind="stable")
    if num_tasks > int(usable.sum()):
        raise ValueError(f"num_tasks={num_tasks} exceeds the {int(usable.sum())} usable features")
    if choice == "top" or len(candidates) <= num_tasks:
        picked = [j for j in order if rel.relevant[j] and usable[j]][:num_tasks]
    else:
        rng = np.random.default_rng(seed)
        picked = list(rng.choice(candidates, size=num_tasks, replace=False))
    fill = [j for j in order if usable[j] and j not in set(picked)]
    picked = np.asarray(picked + fill[: num_tasks - len(picked)], dtype=np.int64)
    cols = x[:, picked]
    targets = (cols - cols.mean(0)) / cols.std(0) if num_tasks else cols
    return AuxiliaryTargets(targets.astype(np.float32), picked, rel)
