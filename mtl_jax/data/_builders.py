"""Offline TFDS builders generated from data that ships with the library.

Each builder writes ``array_record`` files without TensorFlow and is read back
with ``tfds.data_source`` (see :mod:`mtl_jax.data._tfds`). Images are stored as
``Tensor`` features (float32 in ``[0, 1]``), never as ``tfds.features.Image``,
whose encoder needs TensorFlow. The digits are scikit-learn's 1,797 real 8×8
UCI digits; every random choice is drawn from a fixed seed, so a prepared
dataset is the same on every machine. Records are stored in generation order.

``multi_digits``, ``digits_attributes`` and ``grad_norm_toy`` serialise what the
in-memory generators (:mod:`mtl_jax.data._multi_digits`,
:mod:`mtl_jax.data._toy_regression`) return, with those generators' integer
arguments as the builder config (one prepared directory per config), so there
is one implementation of each dataset and :func:`mtl_jax.data.load` with a
config equals the generator called with the same arguments.

References: MultiMNIST, Sabour et al. 2017 (https://arxiv.org/abs/1710.09829);
GradNorm, Chen et al. 2018 (https://arxiv.org/abs/1711.02257); label shift
(Dirichlet and tweak-one targets), Lipton et al. 2018
(https://arxiv.org/abs/1802.03916).
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mtl_jax.data._digits import Digits, load_digits, train_test_split
from mtl_jax.data._domain_shift import DIGIT_DOMAINS, shift_digits
from mtl_jax.data._multi_digits import ATTRIBUTES, attribute_labels, multi_digits
from mtl_jax.data._toy_regression import toy_regression

#: Seed of every random choice the offline builders make.
GENERATION_SEED = 0
#: The domains of ``shifted_digits``, in label order.
DOMAINS = ("clean", "rotated", "noisy", "inverted")
#: Dirichlet concentration and tweak-one (class, probability) of ``label_shifted_digits``.
DIRICHLET_ALPHA = 1.0
TWEAK_ONE = (3, 0.5)


def _image(shape: tuple[int, ...]) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=shape, dtype=np.float32)


def _splits() -> tuple[Digits, Digits]:
    return train_test_split(load_digits(), 0.25, seed=GENERATION_SEED)


class _Offline(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared plumbing: version, ``array_record``, records in generation order, configs.

    A builder whose data comes from a generator with integer arguments lists
    their defaults in ``PARAMS``; its configs are named after the arguments
    (``"num_train4000-num_test1000-seed0"``), the first of ``BUILDER_CONFIGS``
    being the defaults, and any other values make a config on request
    (:meth:`config_name`), so that ``tfds.data_source("multi_digits/seed3-...")``
    and :func:`mtl_jax.data.load` read the data of any seed.
    """

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {  # noqa: RUF012
        "1.0.0": "First release.",
        "2.0.0": "Records in generation order; generator arguments as configs; shared generators.",
    }
    #: The generator's integer arguments and their defaults (empty: no configs).
    PARAMS: ClassVar[dict[str, int]] = {}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs the optional ``importlib_resources`` package for
        # classes outside ``tensorflow_datasets``; the source file is all it needs.
        return epath.Path(inspect.getfile(cls))

    #: Called with 1 after every generated example (the preparation progress bar).
    _on_example = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        generate = cls.__dict__.get("_generate_examples")
        if generate is not None:

            @functools.wraps(generate)
            def counted(self, *args, _generate=generate, **kw):
                for item in _generate(self, *args, **kw):
                    if self._on_example is not None:
                        self._on_example(1)
                    yield item

            cls._generate_examples = counted
        if cls.PARAMS:
            cls.BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=cls.config_name())]

    @classmethod
    def config_name(cls, params: dict[str, int] | None = None) -> str:
        """The config name of the generator arguments ``params`` (defaults filled in).

        Raises:
          ValueError: an argument the generator does not take, or a value that is
            not a non-negative int.
        """
        params = dict(params or {})
        for k, v in params.items():
            if k not in cls.PARAMS:
                raise ValueError(f"config keys must be in {sorted(cls.PARAMS)}, got {k!r}")
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
                raise ValueError(f"config[{k!r}] must be a non-negative int, got {v!r}")
        full = {**cls.PARAMS, **{k: int(v) for k, v in params.items()}}
        return "-".join(f"{k}{v}" for k, v in full.items())

    @classmethod
    def get_builder_config(cls, name, version=None):
        config = super().get_builder_config(name, version)
        if config is None and cls.PARAMS:
            parts = [re.fullmatch(r"([a-z_]+?)(\d+)", p) for p in str(name).split("-")]
            if all(parts):
                params = {m[1]: int(m[2]) for m in parts}
                if set(params) <= set(cls.PARAMS) and cls.config_name(params) == name:
                    config = tfds.core.BuilderConfig(name=name)
        return config

    @property
    def params(self) -> dict[str, int]:
        """The generator arguments of this builder's config."""
        if not self.PARAMS:
            return {}
        parts = [re.fullmatch(r"([a-z_]+?)(\d+)", p) for p in self.builder_config.name.split("-")]
        return {m[1]: int(m[2]) for m in parts}

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=self._features(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        train, test = _splits()
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}


class UCIDigits(_Offline):
    """Scikit-learn's 1,797 real 8×8 UCI digits, unchanged, in their original order.

    One split, ``train``. Features: ``image`` float32 ``[8, 8, 1]`` in ``[0, 1]``,
    ``label``. Experiments that split the digits per seed read them from here.
    """

    name = "digits"
    DESCRIPTION = "scikit-learn's handwritten digits (UCI optical recognition), all 1,797."

    def _features(self):
        return tfds.features.FeaturesDict(
            {"image": _image((8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(load_digits())}

    def _generate_examples(self, data: Digits):
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            yield i, {"image": image, "label": label}


class MultiDigits(_Offline):
    """Two real digits side by side (8×16), two 10-class tasks: the MultiMNIST analogue.

    The records of :func:`mtl_jax.data.multi_digits` with the config's arguments
    (default ``num_train=4000, num_test=1000, seed=0``), in the same order.
    Features: ``image`` float32 ``[8, 16, 1]``, ``left`` and ``right`` class labels.
    """

    PARAMS: ClassVar[dict[str, int]] = {"num_train": 4000, "num_test": 1000, "seed": 0}
    DESCRIPTION = "Two scikit-learn digits side by side; tasks: left and right digit."

    def _features(self):
        return tfds.features.FeaturesDict(
            {
                "image": _image((8, 16, 1)),
                "left": tfds.features.ClassLabel(num_classes=10),
                "right": tfds.features.ClassLabel(num_classes=10),
            }
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        d = multi_digits(**self.params)
        return {
            "train": self._generate_examples((d.x_train, d.y_train)),
            "test": self._generate_examples((d.x_test, d.y_test)),
        }

    def _generate_examples(self, data):
        for i, (image, (left, right)) in enumerate(zip(*data)):
            yield i, {"image": image, "left": left, "right": right}


class DigitsAttributes(_Offline):
    """CelebA-style binary attributes of real digits: six boolean tasks.

    The stratified 75/25 split of :func:`mtl_jax.data.digits_attributes` for the
    config's ``seed`` (default 0), with every attribute of
    :data:`mtl_jax.data._multi_digits.ATTRIBUTES` (odd, ge5, prime, loop,
    straight_stroke, symmetric), each a function of the digit's class.
    Features: ``image`` float32 ``[8, 8, 1]``, ``label``, ``attributes`` (a dict of bools).
    """

    PARAMS: ClassVar[dict[str, int]] = {"seed": 0}
    DESCRIPTION = "Binary attributes of scikit-learn digits (CelebA-style tasks)."

    def _features(self):
        return tfds.features.FeaturesDict(
            {
                "image": _image((8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
                "attributes": tfds.features.FeaturesDict(dict.fromkeys(ATTRIBUTES, np.bool_)),
            }
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        train, test = train_test_split(load_digits(), seed=self.params["seed"])
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, data: Digits):
        attrs = attribute_labels(data.labels).astype(bool)
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            yield i, {"image": image, "label": label, "attributes": dict(zip(ATTRIBUTES, attrs[i]))}


class ShiftedDigits(_Offline):
    """Real digits in four domains: clean, rotated 30°, Gaussian noise (σ 0.3), inverted.

    Every digit of a split appears once per domain. Features: ``image`` float32
    ``[8, 8, 1]``, ``label``, ``domain`` (a class label over ``DOMAINS``).
    """

    DESCRIPTION = "scikit-learn digits under four domain shifts."

    def _features(self):
        return tfds.features.FeaturesDict(
            {
                "image": _image((8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
                "domain": tfds.features.ClassLabel(names=list(DOMAINS)),
            }
        )

    def _generate_examples(self, data: Digits):
        n = len(data.labels)
        for d, domain in enumerate(DOMAINS):
            images = shift_digits(data.images, **DIGIT_DOMAINS[domain], seed=GENERATION_SEED + n)
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

    DESCRIPTION = "scikit-learn digits with Dirichlet and tweak-one label-shifted targets."

    def _features(self):
        return tfds.features.FeaturesDict(
            {"image": _image((8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
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
    """The GradNorm paper's synthetic regression: K tasks with scales σ = linspace(1, 100, K).

    The arrays of :func:`mtl_jax.data.toy_regression` with the config's arguments
    (default ``num_tasks=10, num_train=100, num_test=1000, seed=0``), in the same
    order. Features: ``x`` float32 ``[250]``, ``y`` float32 ``[K, 100]`` (every
    task's target for that input).
    """

    PARAMS: ClassVar[dict[str, int]] = {
        "num_tasks": 10,
        "num_train": 100,
        "num_test": 1000,
        "seed": 0,
    }
    DESCRIPTION = "GradNorm (Chen et al. 2018) toy regression."

    def _features(self):
        k = self.params["num_tasks"]
        return tfds.features.FeaturesDict({"x": _image((250,)), "y": _image((k, 100))})

    def _split_generators(self, dl_manager):
        del dl_manager
        p = self.params
        d = toy_regression(
            p["num_tasks"], num_train=p["num_train"], num_test=p["num_test"], seed=p["seed"]
        )
        return {
            "train": self._generate_examples((d.x_train, d.y_train)),
            "test": self._generate_examples((d.x_test, d.y_test)),
        }

    def _generate_examples(self, data):
        x, y = data
        for i in range(len(x)):
            yield i, {"x": x[i], "y": y[:, i]}
