"""Small in-memory multi-task datasets built from scikit-learn's digits.

``multi_digits``: two real 8×8 digits side by side (an 8×16 image), one 10-class
task per position. ``digits_attributes``: one digit, binary attributes of its
label (odd, ≥ 5, prime, has a closed loop). Both split the digits into train and
test images *before* composing, so no test image appears in training.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mtl_jax.data._digits import load_digits, train_test_split

__all__ = ["ATTRIBUTES", "MultiTaskDigits", "digits_attributes", "multi_digits"]

#: The binary attributes of :func:`digits_attributes`, as label sets.
ATTRIBUTES = {
    "odd": (1, 3, 5, 7, 9),
    "ge5": (5, 6, 7, 8, 9),
    "prime": (2, 3, 5, 7),
    "loop": (0, 6, 8, 9),
}


class MultiTaskDigits(NamedTuple):
    x_train: np.ndarray  # [N, H, W, 1] float32 in [0, 1]
    y_train: np.ndarray  # [N, K] int32 class labels
    x_test: np.ndarray
    y_test: np.ndarray
    task_names: tuple[str, ...]
    num_classes: tuple[int, ...]  # per task


def _check(num_train: int, num_test: int) -> None:
    for name, v in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def multi_digits(*, num_train: int = 4000, num_test: int = 1000, seed: int = 0) -> MultiTaskDigits:
    """MultiDigits: two digits side by side; task ``k`` classifies digit ``k``.

    Args:
      num_train: training pairs (drawn with replacement from 75% of the digits).
      num_test: test pairs (from the other 25%).
      seed: seeds the split and the pairing.

    Returns:
      A :class:`MultiTaskDigits` with ``[N, 8, 16, 1]`` images and ``[N, 2]``
      labels in ``0..9``.
    """
    _check(num_train, num_test)
    rng = np.random.default_rng(seed)
    train, test = train_test_split(load_digits(), seed=seed)

    def pairs(d, n):
        idx = rng.integers(0, len(d.labels), (n, 2))
        x = np.concatenate([d.images[idx[:, 0]], d.images[idx[:, 1]]], axis=2)
        return x.astype(np.float32), d.labels[idx].astype(np.int32)

    x_tr, y_tr = pairs(train, num_train)
    x_te, y_te = pairs(test, num_test)
    return MultiTaskDigits(x_tr, y_tr, x_te, y_te, ("left", "right"), (10, 10))


def digits_attributes(*, seed: int = 0) -> MultiTaskDigits:
    """DigitsAttributes: one digit, four binary tasks on its label (:data:`ATTRIBUTES`).

    Args:
      seed: seeds the stratified 75/25 train/test split.

    Returns:
      A :class:`MultiTaskDigits` with ``[N, 8, 8, 1]`` images and ``[N, 4]``
      labels in ``{0, 1}``.
    """
    train, test = train_test_split(load_digits(), seed=seed)
    sets = [np.array(v) for v in ATTRIBUTES.values()]
    attrs = lambda labels: np.stack([np.isin(labels, s) for s in sets], 1).astype(np.int32)
    return MultiTaskDigits(
        train.images,
        attrs(train.labels),
        test.images,
        attrs(test.labels),
        tuple(ATTRIBUTES),
        (2,) * len(ATTRIBUTES),
    )
