"""Byzantine-robust aggregators: Krum / Multi-Krum and the coordinate-wise trimmed mean.

Krum: Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017,
https://arxiv.org/abs/1703.02757. With ``n`` gradients of which at most ``f``
are adversarial, gradient ``i``'s score is the sum of its squared distances to its
``n − f − 2`` nearest other gradients, ``s(i) = Σ_{j ∈ N_i} ‖g_i − g_j‖²``
(Section 4 of the paper); torchjd's ``Krum`` sums the distances themselves
(``squared=False`` here). Krum returns the gradient of lowest score and
Multi-Krum the mean of the ``m`` lowest. Distances come from the Gram
matrix, ``‖g_i − g_j‖² = G_ii + G_jj − 2 G_ij``, so Krum is a Gram method.

Trimmed mean: Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML 2018,
https://arxiv.org/abs/1803.01498 (Definition 2). For every coordinate the ``b``
largest and ``b`` smallest of the ``n`` values are removed and the other
``n − 2b`` averaged.

Non-finite inputs: robustness here means robustness to finite gradients that are
far off, which the scores and the trimming bound. A NaN or an infinity is not such
a gradient (a NaN has no rank and no distance), so a non-finite entry of a present
task makes the whole output NaN, as in every other weighting function: the
training step's non-finite policy sees it instead of a plausible-looking update
that silently dropped the task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.weighting._gram import as_gram, nan_unless_finite, restrict_gram
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["krum_weights", "trimmed_mean"]


def _check_count(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def krum_weights(
    gram: jax.typing.ArrayLike,
    *,
    n_byzantine: int = 0,
    n_selected: int = 1,
    squared: bool = True,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Krum / Multi-Krum weights: ``1/m`` on the ``m`` gradients of lowest Krum score.

    With ``n`` present tasks, task ``i``'s score is the sum of its squared
    distances ``‖g_i − g_j‖²`` (plain distances with ``squared=False``) to its
    ``n − f − 2`` nearest other present tasks; the weights are ``1/m`` on the
    ``m = min(n_selected, n)`` lowest scores (ties: the lower index) and 0
    elsewhere. The score needs ``n ≥ f + 3``; with fewer present tasks no gradient
    can be told apart from an adversary and the weights are the mean over the
    present tasks (``1/n`` each).

    Args:
      gram: ``[K, K]`` Gram matrix of the task gradients.
      n_byzantine: ``f ≥ 0``, the number of gradients that may be adversarial.
      n_selected: ``m ≥ 1``, how many gradients Multi-Krum averages (1: Krum).
      squared: score with squared distances (the paper) or plain ones (torchjd).
      presence: ``[K]`` bool, which tasks have data (``None``: all); an absent
        task gets weight 0 and is no neighbour of any other.

    Returns:
      ``[K]`` weights summing to 1 (all 0 when no task is present); all NaN if the
      Gram matrix of the present tasks has a non-finite entry.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import krum_weights
      >>> j = jnp.array([[1.0, 0.0], [1.2, 0.0], [0.9, 0.0], [-5.0, 3.0]])
      >>> krum_weights(j @ j.T, n_byzantine=1).tolist()
      [1.0, 0.0, 0.0, 0.0]
    """
    f = _check_count("n_byzantine", n_byzantine, 0)
    m = _check_count("n_selected", n_selected, 1)
    g = as_gram(gram)
    k = g.shape[0]
    present = as_presence(presence, k)
    n = jnp.sum(present.astype(jnp.int32))
    sq = jnp.diagonal(g)
    dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0)
    if not squared:
        dist = jnp.sqrt(dist)
    big = jnp.asarray(jnp.finfo(g.dtype).max, g.dtype)
    others = present[None, :] & ~jnp.eye(k, dtype=bool)
    dist = jnp.where(others, dist, big)
    nearest = jnp.sort(dist, axis=1)
    n_closest = n - f - 2
    rank = jnp.arange(k)[None, :]
    scores = jnp.sum(jnp.where(rank < n_closest, nearest, 0.0), axis=1)
    scores = jnp.where(present, scores, big)
    order = jnp.argsort(scores, stable=True)
    m_eff = jnp.minimum(m, n)
    chosen = jnp.zeros((k,), bool).at[order].set(jnp.arange(k) < m_eff)
    ok = n >= f + 3
    pick = jnp.where(ok, chosen, present)
    count = jnp.where(ok, m_eff, n)
    w = jnp.where(pick, 1.0 / jnp.maximum(count, 1).astype(g.dtype), 0.0).astype(g.dtype)
    return nan_unless_finite(w, restrict_gram(g, present))


def trimmed_mean(
    rows: jax.typing.ArrayLike,
    *,
    trim_number: int = 0,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Coordinate-wise trimmed mean of the task gradients ``rows[k]``.

    For every coordinate the ``b = trim_number`` largest and ``b`` smallest values
    over the ``n`` present tasks are dropped and the remaining ``n − 2b`` averaged.
    With ``n < 2b + 1`` present tasks nothing would remain and the plain mean over
    the present tasks is returned.

    Args:
      rows: ``[K, ...]`` task gradients (leading task axis).
      trim_number: ``b ≥ 0``.
      presence: ``[K]`` bool, which tasks have data (``None``: all); an absent
        task's values are ignored.

    Returns:
      The ``[...]``-shaped trimmed mean (zeros when no task is present); all NaN
      if a present task's gradient has a non-finite entry.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import trimmed_mean
      >>> trimmed_mean(jnp.array([[1.0], [2.0], [100.0]]), trim_number=1).tolist()
      [2.0]
    """
    b = _check_count("trim_number", trim_number, 0)
    x = jnp.asarray(rows)
    if x.ndim < 1:
        raise ValueError(f"rows must have a leading task axis, got shape {x.shape}")
    k = x.shape[0]
    present = as_presence(presence, k)
    n = jnp.sum(present.astype(jnp.int32))
    p = jnp.reshape(present, (k,) + (1,) * (x.ndim - 1))
    zero = jnp.zeros((), x.dtype)
    if b == 0:  # nothing is trimmed: the mean over the present tasks, without a sort
        total = jnp.sum(jnp.where(p, x, zero), axis=0)
        count = jnp.maximum(n, 1).astype(x.dtype)
        return nan_unless_finite(total / count, jnp.where(p, x, zero))
    top = jnp.asarray(jnp.inf, x.dtype)
    ordered = jnp.sort(jnp.where(p, x, top), axis=0)
    rank = jnp.reshape(jnp.arange(k), p.shape)
    ok = n >= 2 * b + 1
    lo = jnp.where(ok, b, 0)
    hi = jnp.where(ok, n - b, n)
    keep = (rank >= lo) & (rank < hi)
    total = jnp.sum(jnp.where(keep, ordered, jnp.zeros_like(ordered)), axis=0)
    count = jnp.maximum(hi - lo, 1).astype(x.dtype)
    return nan_unless_finite(total / count, jnp.where(p, x, zero))
