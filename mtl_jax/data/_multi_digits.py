"""The one generator of the multi-task digit datasets, in memory and for the TFDS builders.

``multi_digits``: two real 8×8 digits side by side (an 8×16 image), one 10-class
task per position (the MultiMNIST analogue of Sabour et al. 2017,
https://arxiv.org/abs/1710.09829). ``digits_attributes``: one digit, CelebA-style
binary attributes of its label. Both split scikit-learn's digits into train and
test images *before* composing, so no test image appears in training.

The offline builders ``multi_digits`` and ``digits_attributes``
(:mod:`mtl_jax.data._builders`) serialise exactly what these functions return, so
an experiment reading the prepared builder through :func:`mtl_jax.data.load`
sees the same arrays as one calling the function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mtl_jax import _validate
from mtl_jax.data._digits import Digits, load_digits, train_test_split

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_ATTRIBUTES",
    "MultiTaskDigits",
    "attribute_labels",
    "digits_attributes",
    "multi_digits",
]

#: The binary attributes of :func:`digits_attributes`, each the set of digit classes
#: that have it. The ``digits_attributes`` builder stores all of them.
ATTRIBUTES = {
    "odd": (1, 3, 5, 7, 9),
    "ge5": (5, 6, 7, 8, 9),
    "prime": (2, 3, 5, 7),
    "loop": (0, 6, 8, 9),
    "straight_stroke": (1, 4, 7),
    "symmetric": (0, 1, 8),
}
#: The tasks :func:`digits_attributes` returns unless told otherwise.
DEFAULT_ATTRIBUTES = ("odd", "ge5", "prime", "loop")


class MultiTaskDigits(NamedTuple):
    x_train: np.ndarray  # [N, H, W, 1] float32 in [0, 1]
    y_train: np.ndarray  # [N, K] int32 class labels
    x_test: np.ndarray
    y_test: np.ndarray
    task_names: tuple[str, ...]
    num_classes: tuple[int, ...]  # per task


def multi_digits(
    *, num_train: int = 4000, num_test: int = 1000, seed: int = 0, digits: Digits | None = None
) -> MultiTaskDigits:
    """MultiDigits: two digits side by side; task ``k`` classifies digit ``k``.

    A stratified 75/25 split of the digits (seeded by ``seed``), then pairs
    ``(i, j)`` drawn uniformly with replacement within each split; the image is
    ``[digit_i | digit_j]`` and the labels ``(label_i, label_j)``.

    Args:
      num_train: training pairs (drawn with replacement from 75% of the digits).
      num_test: test pairs (from the other 25%).
      seed: seeds the split and the pairing.
      digits: the digits to compose; ``None`` for scikit-learn's 1,797.

    Returns:
      A :class:`MultiTaskDigits` with ``[N, 8, 16, 1]`` images and ``[N, 2]``
      labels in ``0..9``.

    Raises:
      ValueError: a non-positive ``num_train`` or ``num_test``.
    """
    _validate.check_int("num_train", num_train)
    _validate.check_int("num_test", num_test)
    rng = np.random.default_rng(seed)
    train, test = train_test_split(load_digits() if digits is None else digits, seed=seed)

    def pairs(d, n):
        idx = rng.integers(0, len(d.labels), (n, 2))
        x = np.concatenate([d.images[idx[:, 0]], d.images[idx[:, 1]]], axis=2)
        return x.astype(np.float32), d.labels[idx].astype(np.int32)

    x_tr, y_tr = pairs(train, num_train)
    x_te, y_te = pairs(test, num_test)
    return MultiTaskDigits(x_tr, y_tr, x_te, y_te, ("left", "right"), (10, 10))


def attribute_labels(
    labels: np.ndarray, attributes: Sequence[str] = tuple(ATTRIBUTES)
) -> np.ndarray:
    """The binary attributes of digit ``labels``: ``out[n, a] = labels[n] ∈ ATTRIBUTES[a]``.

    Args:
      labels: ``[N]`` digit classes.
      attributes: names from :data:`ATTRIBUTES`, in column order.

    Returns:
      ``[N, len(attributes)]`` int32 in ``{0, 1}``.

    Raises:
      ValueError: an unknown attribute name.
    """
    for a in attributes:
        if a not in ATTRIBUTES:
            raise ValueError(f"attributes must be names from {tuple(ATTRIBUTES)}, got {a!r}")
    labels = np.asarray(labels)
    cols = [np.isin(labels, np.array(ATTRIBUTES[a])) for a in attributes]
    return np.stack(cols, 1).astype(np.int32).reshape(len(labels), len(attributes))


def digits_attributes(
    *, seed: int = 0, attributes: Sequence[str] = DEFAULT_ATTRIBUTES, digits: Digits | None = None
) -> MultiTaskDigits:
    """DigitsAttributes: one digit, one binary task per attribute of its label.

    Args:
      seed: seeds the stratified 75/25 train/test split.
      attributes: task names from :data:`ATTRIBUTES` (default: odd, ≥ 5, prime,
        has a closed loop).
      digits: the digits to split; ``None`` for scikit-learn's 1,797.

    Returns:
      A :class:`MultiTaskDigits` with ``[N, 8, 8, 1]`` images and
      ``[N, len(attributes)]`` labels in ``{0, 1}``.

    Raises:
      ValueError: an unknown attribute name or an empty ``attributes``.
    """
    attributes = tuple(attributes)
    if not attributes:
        raise ValueError("attributes must name at least one attribute, got ()")
    train, test = train_test_split(load_digits() if digits is None else digits, seed=seed)
    return MultiTaskDigits(
        train.images,
        attribute_labels(train.labels, attributes),
        test.images,
        attribute_labels(test.labels, attributes),
        attributes,
        (2,) * len(attributes),
    )
