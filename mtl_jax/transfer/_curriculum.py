"""Curriculum learning by transfer: teacher difficulty scores, ordering, pacing, sampling.

Weinshall, Cohen & Amir, "Curriculum Learning by Transfer Learning: Theory and
Experiments with Deep Networks", ICML 2018, https://arxiv.org/abs/1802.03796.

* **Scoring** (transfer teacher): features of the training images from a network
  trained on *other* data; a classifier is fitted on them and an example's score is
  the classifier's confidence in its true label (high = easy). The paper uses an
  ImageNet Inception network and an SVM with probability outputs; here the
  classifier is an L2-regularised softmax regression fitted in JAX
  (``difficulty_scores``) and the features come from whatever teacher the caller
  has (in the packaged experiment: a network pretrained on a disjoint digit task).
* **Ordering**: examples sorted easy → hard *within each class*, then interleaved by
  relative rank so that every prefix of the order is class-balanced. Controls:
  ``"anti"`` (hard → easy) and ``"random"`` (random scores through the same
  balancing, so it differs from the curriculum only in difficulty).
* **Pacing** g(i) ∈ (0, 1]: the fraction of the ordered data available at
  iteration i: fixed exponential ``min(1, start · inc^⌊i/step⌋)``, varied exponential
  (the same with a list of step lengths) and single step. Paper defaults:
  start 0.04, inc 1.9, step 100.
* **Sampling**: each mini-batch is drawn uniformly (without replacement when
  possible) from the first ``⌈g(i)·N⌉`` examples of the order. The "vanilla" control
  is ``no_pacing()`` (every batch from all N examples).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

__all__ = [
    "curriculum_batch",
    "curriculum_order",
    "difficulty_scores",
    "fixed_exponential_pacing",
    "no_pacing",
    "single_step_pacing",
    "varied_exponential_pacing",
]

Pacing = Callable[[ArrayLike], jax.Array]


def difficulty_scores(
    features: ArrayLike,
    labels: ArrayLike,
    num_classes: int,
    *,
    l2: float = 1e-3,
    num_iters: int = 300,
    learning_rate: float = 0.5,
) -> jax.Array:
    """Teacher confidence in the true label: ``p(y_i | f_i)`` of a fitted softmax regression.

    The features are standardised, an L2-regularised multinomial logistic regression
    is fitted full-batch with Nesterov momentum in one jitted ``lax.scan``, and its predicted
    probability of each example's own label is returned (high = easy).

    Args:
      features: teacher features ``[N, D]``.
      labels: int labels ``[N]`` in ``[0, num_classes)``.
      num_classes: number of classes.
      l2: weight of ``l2/2 ‖W‖²`` (≥ 0).
      num_iters: optimisation steps (≥ 1).
      learning_rate: gradient-descent learning rate (> 0).

    Returns:
      Scores ``[N]`` in (0, 1), float32.

    References:
      Weinshall et al., 2018, https://arxiv.org/abs/1802.03796
    """
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    if not isinstance(num_iters, numbers.Integral) or num_iters < 1:
        raise ValueError(f"num_iters must be an int >= 1, got {num_iters!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    f = jnp.asarray(features, jnp.float32)
    y = jnp.asarray(labels, jnp.int32)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ValueError(f"need features [N, D] and labels [N], got {f.shape} and {y.shape}")
    return _scores_jit(f, y, num_classes, float(l2), int(num_iters), float(learning_rate))


def _scores_impl(f, y, num_classes, l2, steps, learning_rate):
    f = (f - f.mean(0, keepdims=True)) / (f.std(0, keepdims=True) + 1e-6)
    params = (jnp.zeros((f.shape[1], num_classes), jnp.float32), jnp.zeros((1, num_classes)))
    onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)

    def loss(p):
        logp = jax.nn.log_softmax(f @ p[0] + p[1])
        return -jnp.mean(jnp.sum(onehot * logp, axis=1)) + 0.5 * l2 * jnp.sum(p[0] ** 2)

    opt = optax.sgd(learning_rate, momentum=0.9, nesterov=True)

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    probs = jax.nn.softmax(f @ p[0] + p[1])
    return jnp.sum(probs * onehot, axis=1)


_scores_jit = jax.jit(_scores_impl, static_argnums=(2, 3, 4, 5))


def curriculum_order(
    scores: ArrayLike, labels: ArrayLike, *, mode: str = "curriculum", seed: int = 0
) -> np.ndarray:
    """Class-balanced ordering of the training set by difficulty.

    Within each class, examples are ranked by score (descending = easy first for
    ``"curriculum"``, ascending for ``"anti"``, by random keys for ``"random"``);
    example with within-class rank r in a class of size n_c gets the key
    ``(r + 0.5) / n_c`` and the order sorts by that key (ties by class), so every
    prefix holds each class in proportion to its size.

    Args:
      scores: ``[N]`` difficulty scores, high = easy (ignored for ``"random"``).
      labels: ``[N]`` int class labels.
      mode: ``"curriculum"``, ``"anti"`` or ``"random"``.
      seed: seed of the ``"random"`` control and of tie-breaking.

    Returns:
      ``[N]`` int32 permutation of ``range(N)``, easiest (curriculum) first.

    References:
      Weinshall et al., 2018, https://arxiv.org/abs/1802.03796
    """
    if mode not in ("curriculum", "anti", "random"):
        raise ValueError(f"mode must be 'curriculum', 'anti' or 'random', got {mode!r}")
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must both be [N], got {s.shape} and {y.shape}")
    rng = np.random.default_rng(seed)
    if mode == "random":
        s = rng.random(s.shape)
    elif mode == "anti":
        s = -s
    key = np.empty(len(s))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        tie = rng.random(len(idx))
        ranked = idx[np.lexsort((tie, -s[idx]))]  # descending score
        key[ranked] = (np.arange(len(idx)) + 0.5) / len(idx)
    return np.lexsort((y, key)).astype(np.int32)


def _check_pacing(start: float, inc: float | None = None) -> None:
    if not 0 < start <= 1:
        raise ValueError(f"starting_percent must be in (0, 1], got {start!r}")
    if inc is not None and not inc >= 1:
        raise ValueError(f"increase must be >= 1, got {inc!r}")


def fixed_exponential_pacing(
    *, starting_percent: float = 0.04, increase: float = 1.9, step_length: int = 100
) -> Pacing:
    """g(i) = min(1, start · inc^⌊i / step_length⌋).

    Args:
      starting_percent: fraction of the data available at first, in (0, 1].
      increase: factor ``>= 1`` applied every ``step_length`` iterations.
      step_length: iterations between increases (``>= 1``).

    Returns:
      A jit-compatible function ``g(i) -> float32 fraction``.

    References:
      Weinshall et al., 2018, https://arxiv.org/abs/1802.03796
    """
    _check_pacing(starting_percent, increase)
    if step_length < 1:
        raise ValueError(f"step_length must be >= 1, got {step_length!r}")

    def g(i: ArrayLike) -> jax.Array:
        k = (jnp.asarray(i, jnp.int32) // step_length).astype(jnp.float32)
        return jnp.minimum(1.0, starting_percent * jnp.power(jnp.float32(increase), k))

    return g


def varied_exponential_pacing(
    *, starting_percent: float = 0.04, increase: float = 1.9, step_lengths: Sequence[int] = (100,)
) -> Pacing:
    """Exponential pacing whose k-th step lasts ``step_lengths[k]`` iterations.

    g(i) = min(1, start · inc^k(i)), where k(i) counts the steps completed by
    iteration i; after the listed lengths, steps keep the last length.

    Args:
      starting_percent: fraction available at first, in (0, 1].
      increase: factor ``>= 1`` per completed step.
      step_lengths: positive step lengths, e.g. ``(50, 100, 200)``.

    Returns:
      A jit-compatible function ``g(i) -> float32 fraction``.

    References:
      Weinshall et al., 2018, https://arxiv.org/abs/1802.03796
    """
    _check_pacing(starting_percent, increase)
    lengths = [int(s) for s in step_lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"step_lengths must be non-empty and positive, got {step_lengths!r}")
    bounds = jnp.asarray(np.cumsum(lengths), jnp.int32)
    last, total = lengths[-1], int(np.sum(lengths))

    def g(i: ArrayLike) -> jax.Array:
        i = jnp.asarray(i, jnp.int32)
        within = jnp.searchsorted(bounds, i, side="right").astype(jnp.int32)
        beyond = jnp.maximum(i - total, -1) // last + 1
        k = jnp.where(i < total, within, len(lengths) + beyond - 1).astype(jnp.float32)
        return jnp.minimum(1.0, starting_percent * jnp.power(jnp.float32(increase), k))

    return g


def single_step_pacing(*, starting_percent: float = 0.04, step_length: int = 100) -> Pacing:
    """g(i) = start for i < step_length, 1 afterwards.

    Args:
      starting_percent: fraction available during the first step, in (0, 1].
      step_length: iteration at which all data becomes available (``>= 1``).

    Returns:
      A jit-compatible function ``g(i) -> float32 fraction``.

    References:
      Weinshall et al., 2018, https://arxiv.org/abs/1802.03796
    """
    _check_pacing(starting_percent)
    if step_length < 1:
        raise ValueError(f"step_length must be >= 1, got {step_length!r}")

    def g(i: ArrayLike) -> jax.Array:
        return jnp.where(jnp.asarray(i, jnp.int32) < step_length, starting_percent, 1.0).astype(
            jnp.float32
        )

    return g


def no_pacing() -> Pacing:
    """g(i) = 1: the "vanilla" control (every batch from the whole training set)."""
    return lambda i: jnp.ones((), jnp.float32)


def curriculum_batch(
    key: jax.Array, order: ArrayLike, step: ArrayLike, *, pacing: Pacing, batch_size: int
) -> jax.Array:
    """Indices of a mini-batch drawn uniformly from the first ⌈g(step)·N⌉ ordered examples.

    Sampling is without replacement when the available prefix holds at least
    ``batch_size`` examples, otherwise the prefix is repeated. Jit-compatible in
    ``key``, ``order`` and ``step``.

    Args:
      key: PRNG key.
      order: ``[N]`` permutation from ``curriculum_order`` (or ``arange(N)``).
      step: the iteration i.
      pacing: a pacing function ``g``.
      batch_size: examples per batch (``1 <= batch_size <= N``).

    Returns:
      ``[batch_size]`` int32 indices into the dataset.

    References:
      Weinshall et al., 2018, https://arxiv.org/abs/1802.03796
    """
    order = jnp.asarray(order, jnp.int32)
    n_total = order.shape[0]
    if not 1 <= batch_size <= n_total:
        raise ValueError(f"batch_size must be in [1, {n_total}], got {batch_size!r}")
    frac = pacing(step)
    n = jnp.clip(jnp.ceil(frac * n_total), 1, n_total).astype(jnp.int32)
    u = jax.random.uniform(key, (n_total,))
    pos = jnp.arange(n_total, dtype=jnp.int32)
    first = jnp.argsort(jnp.where(pos < n, u, 2.0))[:batch_size].astype(jnp.int32)
    first = jnp.where(first < n, first, first % n)
    return order[first]
