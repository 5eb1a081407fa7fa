"""The ``icu_alarms`` TFDS builder: prepared into a tmp dir, read back equal to the generator."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import mtl_jax as mtl
from mtl_jax.data import ICUAlarmsBuilder
from mtl_jax.experiments._cli import main

PARAMS = {"num_train": 24, "num_test": 9, "num_samples": 80, "sampling_rate": 20, "seed": 5}


def test_prepared_splits_equal_the_generator(tmp_path):
    ref = mtl.data.icu_alarms(5, num_windows=33, num_samples=80, sampling_rate=20.0)
    train = mtl.data.load_icu_alarms("train", data_dir=tmp_path, **PARAMS)
    test = mtl.data.load_icu_alarms("test", data_dir=tmp_path, **PARAMS)
    for split, sl in ((train, slice(0, 24)), (test, slice(24, 33))):
        assert split["windows"].dtype == np.float32 and split["windows"].shape[1:] == (3, 80)
        np.testing.assert_array_equal(split["windows"], ref.windows[sl])  # bit-identical
        np.testing.assert_array_equal(split["missing"], ref.missing[sl])
        np.testing.assert_array_equal(split["label"], ref.labels[sl])
        np.testing.assert_array_equal(split["alarm_type"], ref.alarm_type[sl])
    # The files are TFDS array_record files that TFDS itself reads, without TensorFlow.
    name = ICUAlarmsBuilder.config_name(PARAMS)
    assert list((tmp_path / "icu_alarms" / name).glob("*/*.array_record*"))
    src = tfds.data_source(f"icu_alarms/{name}", split="test", data_dir=tmp_path, download=False)
    assert len(src) == 9 and int(src[3]["label"]) == int(ref.labels[27])
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


def test_configs_and_listing(tmp_path, capsys):
    assert ICUAlarmsBuilder.config_name() == (
        "num_train1000-num_test1000-num_samples128-sampling_rate32-seed0"
    )
    assert ICUAlarmsBuilder.config_name({"seed": 3}).endswith("-seed3")
    with pytest.raises(ValueError, match="config keys"):
        ICUAlarmsBuilder.config_name({"windows": 3})
    with pytest.raises(ValueError, match="non-negative int"):
        ICUAlarmsBuilder.config_name({"seed": -1})
    with pytest.raises(ValueError, match="split"):
        mtl.data.load_icu_alarms("validation", data_dir=tmp_path)
    assert "icu_alarms" in mtl.data.list_builders()
    assert "icu_alarms" in tfds.list_builders(with_community_datasets=False)
    assert main(["data", "list"]) == 0
    assert "icu_alarms" in capsys.readouterr().out
