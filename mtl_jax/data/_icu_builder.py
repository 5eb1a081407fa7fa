"""The ``icu_alarms`` TFDS builder: synthetic ICU alarm windows as ``array_record`` files.

Serialises what :func:`mtl_jax.data.icu_alarms` returns, without TensorFlow
(``Tensor`` features only), so experiments read the windows through
``tfds.data_source``. The generator's integer arguments are the builder config
(one prepared directory per config). Stand-in for the private ICU data of
Schwab et al., "Not to Cry Wolf: Distantly Supervised Multitask Learning in
Critical Care", ICML 2018, https://arxiv.org/abs/1802.05027.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data._builders import _Offline
from mtl_jax.data._icu_alarms import ALARM_TYPES, ICU_STREAMS, icu_alarms

__all__ = ["ICUAlarmsBuilder"]


class ICUAlarmsBuilder(_Offline):
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
    DESCRIPTION = "Synthetic multichannel ICU alarm windows: true vs false alarms."

    def _features(self):
        p = self.params
        return tfds.features.FeaturesDict(
            {
                "windows": tfds.features.Tensor(
                    shape=(len(ICU_STREAMS), p["num_samples"]), dtype=np.float32
                ),
                "missing": tfds.features.Tensor(shape=(len(ICU_STREAMS),), dtype=np.float32),
                "label": tfds.features.ClassLabel(names=["false_alarm", "true_alarm"]),
                "alarm_type": tfds.features.ClassLabel(names=list(ALARM_TYPES)),
            }
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
