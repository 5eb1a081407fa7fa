"""The ``icu_alarms`` TFDS builder: synthetic ICU alarm windows as ``array_record`` files.

Serialises what :func:`mtl_jax.data.icu_alarms` returns, without TensorFlow
(``Tensor`` features only), so experiments read the windows through
``tfds.data_source``. The generator's integer arguments are the builder config
(one prepared directory per config). Stand-in for the private ICU data of
Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027.
"""

from __future__ import annotations

import inspect
import os
import re
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mtl_jax.data._icu_alarms import ALARM_TYPES, ICU_STREAMS, icu_alarms

__all__ = ["ICUAlarmsBuilder", "load_icu_alarms"]


class ICUAlarmsBuilder(tfds.core.GeneratorBasedBuilder):
    """Synthetic ICU alarm windows (true arrhythmias vs artefact false alarms), DSMT-Nets' data.

    The windows of :func:`mtl_jax.data.icu_alarms` called with
    ``num_windows = num_train + num_test`` and the config's ``num_samples``,
    ``sampling_rate`` (Hz) and ``seed`` (defaults in ``PARAMS``): the first
    ``num_train`` form the ``train`` split and the rest the ``test`` split, in
    generation order. Features: ``windows`` float32 ``[3, num_samples]`` (streams
    in :data:`~mtl_jax.data.ICU_STREAMS` order), ``missing`` float32 ``[3]``,
    ``label`` (0 false alarm, 1 true alarm) and ``alarm_type`` (a class label
    over :data:`~mtl_jax.data.ALARM_TYPES`).

    Configs are named after the arguments (``"num_train1000-num_test1000-
    num_samples128-sampling_rate32-seed0"``, see :meth:`config_name`); any values
    make a config on request.

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.
    """

    name = "icu_alarms"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    #: The generator's integer arguments and their defaults.
    PARAMS: ClassVar[dict[str, int]] = {
        "num_train": 1000,
        "num_test": 1000,
        "num_samples": 128,
        "sampling_rate": 32,
        "seed": 0,
    }

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs the optional ``importlib_resources`` package for
        # classes outside ``tensorflow_datasets``; the source file is all it needs.
        return epath.Path(inspect.getfile(cls))

    @classmethod
    def config_name(cls, params: dict[str, int] | None = None) -> str:
        """The config name of the generator arguments ``params`` (defaults filled in).

        Args:
          params: a subset of ``PARAMS``'s keys with non-negative int values.

        Returns:
          ``"num_train{a}-num_test{b}-num_samples{c}-sampling_rate{d}-seed{e}"``.

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

    @staticmethod
    def _parse(name: str) -> dict[str, int] | None:
        parts = [re.fullmatch(r"([a-z_]+?)(\d+)", p) for p in str(name).split("-")]
        return {m[1]: int(m[2]) for m in parts} if all(parts) else None

    @classmethod
    def get_builder_config(cls, name, version=None):
        config = super().get_builder_config(name, version)
        if config is None:
            params = cls._parse(name)
            if params is not None and set(params) <= set(cls.PARAMS):
                if cls.config_name(params) == name:
                    config = tfds.core.BuilderConfig(name=name)
        return config

    @property
    def params(self) -> dict[str, int]:
        """The generator arguments of this builder's config."""
        return self._parse(self.builder_config.name)

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        p = self.params
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic multichannel ICU alarm windows: true vs false alarms.",
            features=tfds.features.FeaturesDict(
                {
                    "windows": tfds.features.Tensor(
                        shape=(len(ICU_STREAMS), p["num_samples"]), dtype=np.float32
                    ),
                    "missing": tfds.features.Tensor(shape=(len(ICU_STREAMS),), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=["false_alarm", "true_alarm"]),
                    "alarm_type": tfds.features.ClassLabel(names=list(ALARM_TYPES)),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        p = self.params
        if p["num_train"] < 1 or p["num_test"] < 1:
            raise ValueError(f"num_train and num_test must be >= 1; got {p}")
        d = icu_alarms(
            p["seed"],
            num_windows=p["num_train"] + p["num_test"],
            num_samples=p["num_samples"],
            sampling_rate=float(p["sampling_rate"]),
        )
        cut = p["num_train"]
        return {
            "train": self._generate_examples(d, 0, cut),
            "test": self._generate_examples(d, cut, cut + p["num_test"]),
        }

    def _generate_examples(self, d, start, stop):
        for i in range(start, stop):
            yield (
                i - start,
                {
                    "windows": d.windows[i],
                    "missing": d.missing[i],
                    "label": int(d.labels[i]),
                    "alarm_type": int(d.alarm_type[i]),
                },
            )


ICUAlarmsBuilder.BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=ICUAlarmsBuilder.config_name())]


def load_icu_alarms(
    split: str, *, data_dir: str | os.PathLike | None = None, **params: int
) -> dict[str, np.ndarray]:
    """One split of the ``icu_alarms`` builder as NumPy arrays, prepared on first use.

    Prepares the config ``params`` (see :class:`ICUAlarmsBuilder`) into
    ``data_dir`` unless it is there, then reads the split back through
    ``tfds.data_source`` (no TensorFlow) in generation order, so
    ``load_icu_alarms("train", seed=3, num_train=n, ...)["windows"]`` equals
    ``icu_alarms(3, num_windows=n + num_test, ...).windows[:n]``.

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: the TFDS cache directory; ``None`` for
        :func:`mtl_jax.data.default_data_dir`.
      **params: generator arguments (``num_train``, ``num_test``, ``num_samples``,
        ``sampling_rate``, ``seed``); unnamed ones keep their defaults.

    Returns:
      ``{"windows": [N, 3, T] float32, "missing": [N, 3] float32, "label": [N]
      int64, "alarm_type": [N] int64}``.

    Raises:
      ValueError: an unknown split or generator argument.
    """
    from mtl_jax.data._tfds import default_data_dir

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    config = ICUAlarmsBuilder.config_name(params)
    data_dir = os.fspath(default_data_dir() if data_dir is None else data_dir)
    builder = ICUAlarmsBuilder(config=config, data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    source = tfds.data_source(
        f"icu_alarms/{config}", split=split, data_dir=data_dir, download=False
    )
    records = source.__getitems__(range(len(source)))
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
