"""Multi-task views of public TFDS datasets on mock data, and the NYUv2 reader on written files."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import mtl_jax as mtl


def _pair(name, index=1):
    """The raw mock record and its view (TFDS mock data: nothing downloads)."""
    with tfds.testing.mock_data(num_examples=4):
        raw = tfds.data_source(name, split="train")
        view = mtl.data.multitask_view(name, split="train")
        assert len(view) == len(raw) == 4
        return raw[index], view[index]


def test_celeb_a_is_40_binary_tasks_and_a_landmark_regression():
    raw, rec = _pair("celeb_a")
    assert len(mtl.data.CELEB_A_ATTRIBUTES) == 40
    assert set(mtl.data.CELEB_A_ATTRIBUTES) == set(raw["attributes"])
    assert rec["attributes"].shape == (40,) and rec["attributes"].dtype == bool
    for i, a in enumerate(mtl.data.CELEB_A_ATTRIBUTES):
        assert rec["attributes"][i] == bool(raw["attributes"][a])
    assert rec["landmarks"].shape == (10,) and rec["landmarks"].dtype == np.float32
    assert rec["landmarks"][0] == raw["landmarks"]["lefteye_x"]
    assert rec["landmarks"][9] == raw["landmarks"]["rightmouth_y"]
    np.testing.assert_allclose(rec["image"], raw["image"] / 255.0, rtol=1e-6)


def test_cifar100_fine_and_coarse():
    raw, rec = _pair("cifar100")
    assert (rec["fine"], rec["coarse"]) == (raw["label"], raw["coarse_label"])
    assert rec["image"].shape == (32, 32, 3) and rec["image"].dtype == np.float32


@pytest.mark.parametrize("name,domain", [("mnist", 0), ("svhn_cropped", 1)])
def test_digit_domains_share_one_image_shape(name, domain):
    raw, rec = _pair(name)
    assert rec["image"].shape == (32, 32, 3) and rec["domain"] == domain
    assert rec["label"] == raw["label"]
    if name == "mnist":  # padded by 2 pixels and repeated over 3 channels
        np.testing.assert_allclose(rec["image"][2:30, 2:30, 1], raw["image"][..., 0] / 255.0)
        assert not rec["image"][:2].any()


def test_omniglot_alphabets_are_tasks():
    raw, rec = _pair("omniglot")
    assert rec["task"] == raw["alphabet"] and rec["label"] == raw["label"]
    assert rec["image"].shape == (105, 105, 1)


def test_view_feeds_the_pipeline():
    with tfds.testing.mock_data(num_examples=6):
        view = mtl.data.multitask_view("celeb_a", split="train")
        batch = next(iter(mtl.data.make_loader(view, batch_size=3, seed=0)))
    assert batch["attributes"].shape == (3, 40) and batch["landmarks"].shape == (3, 10)


def test_unknown_view_raises():
    with pytest.raises(ValueError, match="name must be one of"):
        mtl.data.multitask_view("imagenet2012", split="train")


def _write_nyuv2(root, n, rng):
    for i in range(n):
        for kind, arr in {
            "image": rng.uniform(size=(6, 8, 3)),
            "label": rng.integers(-1, 13, size=(6, 8)).astype(np.float64),
            "depth": rng.uniform(size=(6, 8, 1)),
            "normal": rng.normal(size=(6, 8, 3)),
        }.items():
            (root / "train" / kind).mkdir(parents=True, exist_ok=True)
            np.save(root / "train" / kind / f"{i}.npy", arr)


def test_nyuv2_reads_the_preprocessed_directory(tmp_path, rng):
    _write_nyuv2(tmp_path, 3, rng)
    src = mtl.data.nyuv2_source(tmp_path, split="train")
    assert len(src) == 3
    rec = src[2]
    np.testing.assert_array_equal(
        rec["depth"], np.load(tmp_path / "train/depth/2.npy").astype(np.float32)
    )
    assert rec["segmentation"].dtype == np.int64 and rec["segmentation"].min() >= -1
    assert rec["normal"].shape == (6, 8, 3)
    with pytest.raises(IndexError):
        src[3]
    with pytest.raises(ValueError, match="val/image"):
        mtl.data.nyuv2_source(tmp_path, split="val")
    with pytest.raises(ValueError, match="split"):
        mtl.data.nyuv2_source(tmp_path, split="test")
    (tmp_path / "train/depth/2.npy").unlink()
    with pytest.raises(ValueError, match="unequal"):
        mtl.data.nyuv2_source(tmp_path, split="train")
