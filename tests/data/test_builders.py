"""Offline TFDS builders prepare and load without TensorFlow; the `mtl-jax data` commands."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

import mtl_jax as mtl
from mtl_jax.data import _builders
from mtl_jax.experiments._cli import main

NAMES = ["digits", "multi_digits", "digits_attributes", "shifted_digits", "label_shifted_digits"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def _all(source):
    return [source[i] for i in range(len(source))]


def test_tensorflow_is_absent():
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


def test_builders_are_registered_under_their_names():
    assert sorted(mtl.data.list_builders()) == sorted([*NAMES, "grad_norm_toy", "icu_alarms"])
    registered = set(tfds.list_builders(with_community_datasets=False))
    assert set(mtl.data.list_builders()) <= registered


def test_grad_norm_toy_matches_the_generator(data_dir):
    src = mtl.data.data_source("grad_norm_toy", split="train", data_dir=data_dir)
    ref = mtl.data.toy_regression(10, seed=0)
    assert len(src) == 100
    # Records are stored in generation order.
    np.testing.assert_array_equal(np.stack([r["x"] for r in _all(src)]), ref.x_train)
    y = np.stack([r["y"] for r in _all(src)])
    np.testing.assert_array_equal(y, np.moveaxis(ref.y_train, 0, 1))
    # Read back through TFDS's own entry point too (no TensorFlow).
    test = tfds.data_source("grad_norm_toy", split="test", data_dir=data_dir)
    assert len(test) == 1000 and test[0]["y"].shape == (10, 100)


def _digit_set(images):
    return {np.asarray(im, np.float32).tobytes() for im in images}


def test_multi_digits_pairs_real_digits_with_their_labels(data_dir):
    digits = mtl.data.load_digits()
    by_bytes = {im.tobytes(): int(lab) for im, lab in zip(digits.images, digits.labels)}
    src = mtl.data.data_source("multi_digits", split="train", data_dir=data_dir)
    assert len(src) == 4000
    for r in _all(src)[:200]:
        assert r["image"].shape == (8, 16, 1)
        left, right = r["image"][:, :8], r["image"][:, 8:]
        assert by_bytes[np.ascontiguousarray(left).tobytes()] == r["left"]
        assert by_bytes[np.ascontiguousarray(right).tobytes()] == r["right"]


def test_digits_attributes_follow_the_label(data_dir):
    src = mtl.data.data_source("digits_attributes", split="test", data_dir=data_dir)
    records = _all(src)
    assert len(records) == 450
    for r in records:
        assert set(r["attributes"]) == set(_builders.ATTRIBUTES)
        assert bool(r["attributes"]["odd"]) == (r["label"] % 2 == 1)
        assert bool(r["attributes"]["ge5"]) == (r["label"] >= 5)
        assert bool(r["attributes"]["prime"]) == (r["label"] in (2, 3, 5, 7))
        assert bool(r["attributes"]["loop"]) == (r["label"] in (0, 6, 8, 9))
        assert bool(r["attributes"]["symmetric"]) == (r["label"] in (0, 1, 8))


def test_shifted_digits_domains(data_dir):
    records = _all(mtl.data.data_source("shifted_digits", split="test", data_dir=data_dir))
    by_domain = collections.defaultdict(list)
    for r in records:
        by_domain[_builders.DOMAINS[r["domain"]]].append(r["image"])
    assert {k: len(v) for k, v in by_domain.items()} == dict.fromkeys(_builders.DOMAINS, 450)
    clean = _digit_set(by_domain["clean"])
    assert _digit_set([1.0 - im for im in by_domain["inverted"]]) == clean
    assert not _digit_set(by_domain["rotated"]) & clean
    # Noise (clipped to [0, 1]) lifts about half of the blank pixels off zero.
    blank = lambda ims: np.mean(np.stack(ims) == 0.0)
    assert blank(by_domain["noisy"]) < 0.7 * blank(by_domain["clean"])


def test_label_shifted_digits_targets(data_dir):
    ref = _builders.target_distributions()
    np.testing.assert_allclose(ref["tweak_one"].sum(), 1.0)
    assert ref["tweak_one"][3] == 0.5
    for split in ["dirichlet", "tweak_one"]:
        src = mtl.data.data_source("label_shifted_digits", split=split, data_dir=data_dir)
        labels = np.array([r["label"] for r in _all(src)])
        freq = np.bincount(labels, minlength=10) / len(labels)
        # 450 draws: every frequency within 4 binomial standard deviations.
        sd = np.sqrt(ref[split] * (1 - ref[split]) / len(labels))
        assert np.all(np.abs(freq - ref[split]) <= 4 * sd + 1e-9), (split, freq, ref[split])
    with pytest.raises(ValueError, match="split"):
        mtl.data.data_source("label_shifted_digits", split="nope", data_dir=data_dir)


def test_unknown_builder_raises():
    with pytest.raises(ValueError, match="name must be one of"):
        mtl.data.get_builder("cifar", data_dir="/nonexistent")


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_JAX_DATA_DIR", str(tmp_path))
    assert mtl.data.default_data_dir() == tmp_path
    monkeypatch.delenv("MTL_JAX_DATA_DIR")
    assert mtl.data.default_data_dir().parts[-3:] == (".cache", "mtl_jax", "tensorflow_datasets")


def test_data_commands(data_dir, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in mtl.data.list_builders():
        assert name in out
    assert main(["data", "prepare", "grad_norm_toy", "--data-dir", str(data_dir)]) == 0
    assert "prepared grad_norm_toy" in capsys.readouterr().out
    assert main(["data", "info", "label_shifted_digits", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "split tweak_one: 450 examples" in out and "split train: 1347 examples" in out
    assert main(["data", "info", "nope", "--data-dir", str(data_dir)]) == 2
