"""Each mistake a user can make with the label-shift estimators, and its message."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import adaptation

K = 3
EYE = np.eye(K, dtype=np.float32)
PROBS = EYE[[0, 0, 1, 1, 2, 2]]  # a perfect classifier on 6 holdout points
LABELS = np.array([0, 0, 1, 1, 2, 2])
TARGET = EYE[[0, 1, 2, 2]]
LOGITS = np.log(PROBS * 0.9 + 0.05)

MISTAKES = {
    "label -1": (
        lambda: adaptation.confusion_matrix(PROBS, np.array([0, 0, 1, 1, 2, -1])),
        r"labels must lie in 0\.\.2 \(num_classes=3\); got 1 out of range, e\.g\. \[-1\]",
    ),
    "label == K": (
        lambda: adaptation.bbse(PROBS, np.array([0, 0, 1, 1, 2, 3]), TARGET),
        r"labels must lie in 0\.\.2 .* e\.g\. \[3\]",
    ),
    "float labels": (
        lambda: adaptation.confusion_matrix(PROBS, LABELS.astype(np.float32)),
        "labels must be integers",
    ),
    "class absent from the holdout": (
        lambda: adaptation.bbse(PROBS, np.array([0, 0, 1, 1, 1, 1]), TARGET, ridge=0.1),
        r"class\(es\) \[2\] never occur in holdout_labels",
    ),
    "class absent, pinv": (
        lambda: adaptation.bbse(PROBS, np.array([0, 0, 1, 1, 1, 1]), TARGET, on_singular="pinv"),
        r"class\(es\) \[2\] never occur in holdout_labels",
    ),
    "class never predicted": (
        lambda: adaptation.bbse(EYE[[0, 0, 1, 1, 1, 1]], LABELS, TARGET),
        r"singular \(class\(es\) \[2\] are never predicted on the holdout",
    ),
    "empty holdout": (
        lambda: adaptation.bbse(PROBS[:0], LABELS[:0], TARGET),
        "probs is empty",
    ),
    "empty target": (
        lambda: adaptation.bbse(PROBS, LABELS, TARGET[:0]),
        "target_probs is empty",
    ),
    "mlls priors not summing to one": (
        lambda: adaptation.mlls(TARGET, np.array([0.5, 0.5, 0.5], np.float32)),
        r"source_priors must sum to one .* got sum 1\.5",
    ),
    "mlls non-positive prior": (
        lambda: adaptation.mlls(TARGET, np.array([1.0, 0.0, 0.0], np.float32)),
        "source_priors must be positive",
    ),
    "mlls empty target": (
        lambda: adaptation.mlls(TARGET[:0], np.full(K, 1 / K, np.float32)),
        r"target_probs is empty \(m = 0\)",
    ),
    "bcts label out of range": (
        lambda: adaptation.bcts_calibrate(LOGITS, np.array([0, 0, 1, 1, 2, 10])),
        r"labels must lie in 0\.\.2 .* e\.g\. \[10\]",
    ),
    "bcts empty": (
        lambda: adaptation.bcts_calibrate(LOGITS[:0], LABELS[:0]),
        r"logits is empty",
    ),
    "iw-ce label out of range": (
        lambda: adaptation.importance_weighted_cross_entropy(
            LOGITS, np.array([0, 0, 1, 1, 2, -1]), np.ones(K, np.float32)
        ),
        r"labels must lie in 0\.\.2 .* e\.g\. \[-1\]",
    ),
    "iw-ce empty batch": (
        lambda: adaptation.importance_weighted_cross_entropy(
            LOGITS[:0], LABELS[:0], np.ones(K, np.float32)
        ),
        r"logits is empty \(n = 0\)",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_mistake_message(mistake):
    call, message = MISTAKES[mistake]
    with pytest.raises(ValueError, match=message):
        call()


def test_out_of_range_labels_under_jit_give_nan_not_a_biased_matrix():
    c = jax.jit(adaptation.confusion_matrix)(PROBS, jnp.array([0, 0, 1, 1, 2, -1]))
    assert bool(jnp.all(jnp.isnan(c)))
    good = jax.jit(adaptation.confusion_matrix)(PROBS, jnp.asarray(LABELS))
    np.testing.assert_allclose(np.asarray(good), np.diag([1 / 3] * 3), atol=1e-7)
    assert float(jnp.sum(good)) == pytest.approx(1.0)


def test_valid_inputs_still_pass():
    w = adaptation.bbse(PROBS, LABELS, TARGET)  # q = (1/4, 1/4, 1/2), p = 1/3 each
    np.testing.assert_allclose(np.asarray(w), [0.75, 0.75, 1.5], rtol=1e-5)
    priors = np.full(K, 1 / K, np.float32)
    assert adaptation.mlls(TARGET * 0.9 + 0.1 / K, priors).shape == (K,)
