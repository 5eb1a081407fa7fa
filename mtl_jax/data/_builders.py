"""Offline TFDS builders generated from data that ships with the library.

Each builder writes ``array_record`` files without TensorFlow and is read back
with ``tfds.data_source`` (see :mod:`mtl_jax.data._tfds`). Images are stored as
``Tensor`` features (float32 in ``[0, 1]``), never as ``tfds.features.Image``,
whose encoder needs TensorFlow. The digits are scikit-learn's 1,797 real 8×8
UCI digits; every random choice is drawn from a fixed seed, so a prepared
dataset is the same on every machine.

References: MultiMNIST, Sabour et al. 2017 (https://arxiv.org/abs/1710.09829);
GradNorm, Chen et al. 2018 (https://arxiv.org/abs/1711.02257); label shift
(Dirichlet and tweak-one targets), Lipton et al. 2018
(https://arxiv.org/abs/1802.03916).
"""

from __future__ import annotations

import inspect

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mtl_jax.data._digits import Digits, load_digits, train_test_split
from mtl_jax.data._toy_regression import toy_regression

#: Seed of every random choice the offline builders make.
GENERATION_SEED = 0
#: The domains of ``shifted_digits``, in label order.
DOMAINS = ("clean", "rotated", "noisy", "inverted")
#: The binary attributes of ``digits_attributes``, each a set of digit classes.
ATTRIBUTES = {
    "even": (0, 2, 4, 6, 8),
    "large": (5, 6, 7, 8, 9),
    "prime": (2, 3, 5, 7),
    "has_loop": (0, 6, 8, 9),
    "has_straight_stroke": (1, 4, 7),
    "symmetric": (0, 1, 8),
}
#: Dirichlet concentration and tweak-one (class, probability) of ``label_shifted_digits``.
DIRICHLET_ALPHA = 1.0
TWEAK_ONE = (3, 0.5)


def _image(shape: tuple[int, ...]) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=shape, dtype=np.float32)


def _splits() -> tuple[Digits, Digits]:
    return train_test_split(load_digits(), 0.25, seed=GENERATION_SEED)


class _Offline(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared plumbing: version, ``array_record`` by default, train and test splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}  # noqa: RUF012

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs the optional ``importlib_resources`` package for
        # classes outside ``tensorflow_datasets``; the source file is all it needs.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager
        train, test = _splits()
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}


class MultiDigits(_Offline):
    """Two real digits side by side (8×16), two 10-class tasks: the MultiMNIST analogue.

    Each split pairs every digit of the split (left) with a digit drawn from the
    same split (right). Features: ``image`` float32 ``[8, 16, 1]``, ``left`` and
    ``right`` class labels.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Two scikit-learn digits side by side; tasks: left and right digit.",
            features=tfds.features.FeaturesDict(
                {
                    "image": _image((8, 16, 1)),
                    "left": tfds.features.ClassLabel(num_classes=10),
                    "right": tfds.features.ClassLabel(num_classes=10),
                }
            ),
        )

    def _generate_examples(self, data: Digits):
        rng = np.random.default_rng([GENERATION_SEED, len(data.labels)])
        partner = rng.permutation(len(data.labels))
        for i, j in enumerate(partner):
            image = np.concatenate([data.images[i], data.images[j]], axis=1)
            yield int(i), {"image": image, "left": data.labels[i], "right": data.labels[j]}


class DigitsAttributes(_Offline):
    """CelebA-style binary attributes of real digits: six boolean tasks.

    Attributes (``ATTRIBUTES``): even, large (≥ 5), prime, has_loop,
    has_straight_stroke, symmetric, each a function of the digit's class.
    Features: ``image`` float32 ``[8, 8, 1]``, ``label``, ``attributes`` (a dict of bools).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        attrs = {name: np.bool_ for name in ATTRIBUTES}
        return tfds.core.DatasetInfo(
            builder=self,
            description="Binary attributes of scikit-learn digits (CelebA-style tasks).",
            features=tfds.features.FeaturesDict(
                {
                    "image": _image((8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "attributes": tfds.features.FeaturesDict(attrs),
                }
            ),
        )

    def _generate_examples(self, data: Digits):
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            attrs = {name: bool(label in cls) for name, cls in ATTRIBUTES.items()}
            yield i, {"image": image, "label": label, "attributes": attrs}


def shift_domain(images: np.ndarray, domain: str, *, seed: int) -> np.ndarray:
    """Applies one of the ``shifted_digits`` domain shifts to ``[N, 8, 8, 1]`` images."""
    if domain == "clean":
        return images
    if domain == "rotated":  # 30 degrees, bilinear, within the 8×8 frame
        from scipy.ndimage import rotate

        out = rotate(images, 30.0, axes=(1, 2), reshape=False, order=1)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    if domain == "noisy":
        rng = np.random.default_rng(seed)
        out = images + rng.normal(0.0, 0.3, images.shape)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    if domain == "inverted":
        return (1.0 - images).astype(np.float32)
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")


class ShiftedDigits(_Offline):
    """Real digits in four domains: clean, rotated 30°, Gaussian noise (σ 0.3), inverted.

    Every digit of a split appears once per domain. Features: ``image`` float32
    ``[8, 8, 1]``, ``label``, ``domain`` (a class label over ``DOMAINS``).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn digits under four domain shifts.",
            features=tfds.features.FeaturesDict(
                {
                    "image": _image((8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "domain": tfds.features.ClassLabel(names=list(DOMAINS)),
                }
            ),
        )

    def _generate_examples(self, data: Digits):
        n = len(data.labels)
        for d, domain in enumerate(DOMAINS):
            images = shift_domain(data.images, domain, seed=GENERATION_SEED + n)
            for i in range(n):
                yield d * n + i, {"image": images[i], "label": data.labels[i], "domain": d}


def target_distributions() -> dict[str, np.ndarray]:
    """The two target label distributions of ``label_shifted_digits``, as ``[10]`` arrays."""
    rng = np.random.default_rng(GENERATION_SEED)
    dirichlet = rng.dirichlet(np.full(10, DIRICHLET_ALPHA))
    cls, rho = TWEAK_ONE
    tweak = np.full(10, (1.0 - rho) / 9.0)
    tweak[cls] = rho
    return {"dirichlet": dirichlet, "tweak_one": tweak}


class LabelShiftedDigits(_Offline):
    """Real digits with a label-shifted target: Dirichlet (α = 1) and tweak-one (ρ = 0.5).

    Splits: ``train`` and ``test`` (the source distribution), ``dirichlet`` and
    ``tweak_one``: test digits resampled (with replacement, as many as the test
    split) so that labels follow :func:`target_distributions`. Features: ``image``,
    ``label``.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn digits with Dirichlet and tweak-one label-shifted targets.",
            features=tfds.features.FeaturesDict(
                {"image": _image((8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
            ),
        )

    def _split_generators(self, dl_manager):
        splits = super()._split_generators(dl_manager)
        _, test = _splits()
        rng = np.random.default_rng([GENERATION_SEED, 1])
        for name, p in target_distributions().items():
            labels = rng.choice(10, size=len(test.labels), p=p)
            idx = np.array([rng.choice(np.flatnonzero(test.labels == c)) for c in labels])
            splits[name] = self._generate_examples(Digits(test.images[idx], test.labels[idx]))
        return splits

    def _generate_examples(self, data: Digits):
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            yield i, {"image": image, "label": label}


class GradNormToy(_Offline):
    """The GradNorm paper's synthetic regression: 10 tasks with scales σ = linspace(1, 100, 10).

    From :func:`mtl_jax.data.toy_regression` with ``seed=0``: 100 train and 1,000
    test inputs. Features: ``x`` float32 ``[250]``, ``y`` float32 ``[10, 100]``
    (every task's target for that input).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="GradNorm (Chen et al. 2018) toy regression, 10 tasks.",
            features=tfds.features.FeaturesDict({"x": _image((250,)), "y": _image((10, 100))}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        d = toy_regression(10, seed=GENERATION_SEED)
        return {
            "train": self._generate_examples((d.x_train, d.y_train)),
            "test": self._generate_examples((d.x_test, d.y_test)),
        }

    def _generate_examples(self, data):
        x, y = data
        for i in range(len(x)):
            yield i, {"x": x[i], "y": y[:, i]}
