"""Black-box shift estimation (BBSE) of label-shift importance weights.

Under label shift ``p(x | y) = q(x | y)`` the predictions of any fixed classifier
``f`` satisfy ``μ = C w``, where ``C[i, j] = p(f(x) = i, y = j)`` is the joint
confusion matrix on held-out *source* data, ``μ[i] = q(f(x') = i)`` the
prediction marginal on *target* data and ``w[j] = q(y = j) / p(y = j)``. BBSE
estimates both sides from samples and solves for ``w``.

References:
  Lipton, Wang, Smola. Detecting and Correcting for Label Shift with Black Box
  Predictors. ICML 2018. https://arxiv.org/abs/1802.03916
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["bbse", "confusion_matrix", "prediction_marginal"]


def _check_probs(name: str, probs: jax.Array) -> None:
    if probs.ndim != 2:
        raise ValueError(f"{name} must have shape [n, num_classes], got {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not jnp.issubdtype(probs.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got {probs.dtype}")


def _is_concrete(x: jax.Array) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_labels(name: str, labels: jax.Array, num_classes: int) -> None:
    """Raises if concrete integer ``labels`` fall outside ``0..num_classes-1``."""
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{name} must be integers, got {labels.dtype}")
    if labels.size == 0:
        raise ValueError(f"{name} is empty")
    if not _is_concrete(labels):
        return
    values = np.asarray(labels)
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1} (num_classes={num_classes}); got "
            f"{int(bad.sum())} out of range, e.g. {sorted(set(values[bad].tolist()))[:5]}"
        )


def _as_predictions(probs: jax.Array, soft: bool) -> jax.Array:
    if soft:
        return probs
    return jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1], dtype=probs.dtype)


def confusion_matrix(probs: ArrayLike, labels: ArrayLike, *, soft: bool = False) -> jax.Array:
    r"""Joint confusion matrix ``Ĉ[i, j] = P̂(f(x) = i, y = j)`` of a classifier.

    .. math::
        Ĉ = \frac{1}{n} \sum_{l=1}^n \hat e(x_l)\, \mathrm{onehot}(y_l)^\top,

    where ``ê(x)`` is the one-hot arg-max prediction (hard) or the predicted
    probability vector (``soft=True``). Entries sum to one.

    Labels outside ``0..K-1`` raise a ``ValueError`` when ``labels`` is concrete
    (they would otherwise be dropped and bias ``Ĉ``). Under ``jax.jit`` the check
    cannot raise: if any label is out of range the whole matrix is NaN, so the
    error cannot pass silently into :func:`bbse`'s weights.

    Args:
      probs: ``[n, K]`` predicted class probabilities (or any scores for hard mode).
      labels: ``[n]`` integer labels in ``0..K-1``.
      soft: use probabilities instead of arg-max predictions.

    Returns:
      ``[K, K]`` matrix, rows indexed by prediction, columns by true label.
    """
    probs = jnp.asarray(probs)
    labels = jnp.asarray(labels)
    _check_probs("probs", probs)
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape {probs.shape[:1]}, got {labels.shape}")
    k = probs.shape[-1]
    _check_labels("labels", labels, k)
    preds = _as_predictions(probs, soft)
    onehot = jax.nn.one_hot(labels, k, dtype=probs.dtype)
    c = preds.T @ onehot / jnp.asarray(probs.shape[0], probs.dtype)
    if _is_concrete(labels):
        return c
    in_range = jnp.all((labels >= 0) & (labels < k))
    return jnp.where(in_range, c, jnp.full_like(c, jnp.nan))


def prediction_marginal(probs: ArrayLike, *, soft: bool = False) -> jax.Array:
    """Marginal ``μ̂[i] = P̂(f(x') = i)`` of the predictions on (target) data.

    Args:
      probs: ``[m, K]`` predicted probabilities.
      soft: average probabilities instead of one-hot arg-max predictions.

    Returns:
      ``[K]`` vector summing to one.
    """
    probs = jnp.asarray(probs)
    _check_probs("probs", probs)
    return jnp.mean(_as_predictions(probs, soft), axis=0)


def bbse(
    holdout_probs: ArrayLike,
    holdout_labels: ArrayLike,
    target_probs: ArrayLike,
    *,
    soft: bool = False,
    ridge: float = 0.0,
    on_singular: Literal["raise", "pinv"] = "raise",
    clip: bool = False,
) -> jax.Array:
    r"""Black-box shift estimation of the importance weights ``w = q(y) / p(y)``.

    .. math::
        \hat w = \hat C^{-1} \hat\mu
        \quad\text{or, with ridge } λ > 0,\quad
        \hat w = (\hat C^\top \hat C + λ I)^{-1} \hat C^\top \hat\mu ,

    with ``Ĉ`` from :func:`confusion_matrix` on the labelled holdout and ``μ̂`` from
    :func:`prediction_marginal` on the unlabelled target sample. The official code
    uses the ridge form with ``λ = 1 / min(n, m)``.

    A class absent from ``holdout_labels`` (an empty column of ``Ĉ``) has no
    defined weight (``p(y) = 0``): with concrete inputs a ``ValueError`` names it,
    whatever ``ridge`` and ``on_singular`` are; under ``jax.jit`` (no check
    possible) its weight comes out as whatever the ridge or pseudo-inverse gives
    (0 with ``"pinv"``), so check the labels before jitting.

    Singular ``Ĉ`` (a class never predicted, or never present in the holdout):
    with ``ridge == 0`` and ``on_singular="raise"`` the matrix is checked eagerly
    (its smallest singular value against ``K · eps · ‖Ĉ‖``) and a ``ValueError`` is
    raised; this check needs concrete arrays, so under ``jax.jit`` pass
    ``on_singular="pinv"`` or ``ridge > 0``. With ``on_singular="pinv"`` the
    minimum-norm least-squares solution ``Ĉ⁺ μ̂`` is returned, which equals
    ``Ĉ⁻¹ μ̂`` whenever ``Ĉ`` is invertible.

    Args:
      holdout_probs: ``[n, K]`` classifier probabilities on labelled source holdout.
      holdout_labels: ``[n]`` integer labels of the holdout.
      target_probs: ``[m, K]`` classifier probabilities on unlabelled target data.
      soft: BBSE-soft (probabilities) instead of BBSE-hard (arg-max predictions).
      ridge: Tikhonov parameter ``λ ≥ 0``.
      on_singular: ``"raise"`` or ``"pinv"`` (see above).
      clip: clip the weights at zero (as done before importance-weighted ERM).

    Returns:
      ``[K]`` estimated importance weights.

    Example:
      >>> import numpy as np
      >>> from mtl_jax.adaptation import bbse
      >>> holdout = np.eye(2, dtype=np.float32)[[0, 0, 1, 1]]  # a perfect classifier
      >>> target = np.eye(2, dtype=np.float32)[[0, 0, 0, 1]]
      >>> bbse(holdout, np.array([0, 0, 1, 1]), target)  # q = (3/4, 1/4), p = (1/2, 1/2)
      Array([1.5, 0.5], dtype=float32)

    References:
      Lipton, Wang, Smola. Detecting and Correcting for Label Shift with Black Box
      Predictors. ICML 2018. https://arxiv.org/abs/1802.03916
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if on_singular not in ("raise", "pinv"):
        raise ValueError(f"on_singular must be 'raise' or 'pinv', got {on_singular!r}")
    c = confusion_matrix(holdout_probs, holdout_labels, soft=soft)
    target_probs = jnp.asarray(target_probs)
    _check_probs("target_probs", target_probs)
    if target_probs.shape[-1] != c.shape[0]:
        raise ValueError(
            f"target_probs has {target_probs.shape[-1]} classes, holdout has {c.shape[0]}"
        )
    mu = prediction_marginal(target_probs, soft=soft)
    k = c.shape[0]
    if _is_concrete(c):
        counts = np.bincount(np.asarray(holdout_labels).ravel(), minlength=k)
        absent = np.flatnonzero(counts == 0).tolist()
        if absent:
            raise ValueError(
                f"class(es) {absent} never occur in holdout_labels, so their weight "
                "q(y)/p(y) is undefined (p(y) = 0); use a holdout that contains every "
                "class, or drop those classes from the model's output"
            )
    if ridge > 0:
        lhs = c.T @ c + jnp.asarray(ridge, c.dtype) * jnp.eye(k, dtype=c.dtype)
        w = jnp.linalg.solve(lhs, c.T @ mu)
    elif on_singular == "pinv":
        w = jnp.linalg.pinv(c) @ mu
    else:
        if isinstance(c, jax.core.Tracer):
            raise ValueError(
                "bbse(on_singular='raise') checks Ĉ eagerly and cannot run under jit; "
                "pass on_singular='pinv' or ridge > 0"
            )
        s = np.linalg.svd(np.asarray(c, np.float64), compute_uv=False)
        if s[-1] <= k * np.finfo(np.asarray(c).dtype).eps * s[0]:
            never = np.flatnonzero(np.asarray(c).sum(axis=1) == 0).tolist()
            why = (
                f"class(es) {never} are never predicted on the holdout"
                if never
                else "its columns are linearly dependent"
            )
            raise ValueError(
                f"the confusion matrix is singular ({why}; singular values {s}); "
                "use ridge > 0 or on_singular='pinv'"
            )
        w = jnp.linalg.solve(c, mu)
    return jnp.maximum(w, 0) if clip else w
