"""The packaged experiment ``mtl-jax run architectures`` and the digit datasets."""

import json

import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax.experiments import _registry, architectures


def test_digit_datasets():
    md = mtl.data.multi_digits(num_train=50, num_test=20, seed=3)
    assert md.x_train.shape == (50, 8, 16, 1) and md.y_train.shape == (50, 2)
    assert md.x_test.shape == (20, 8, 16, 1) and md.num_classes == (10, 10)
    digits = mtl.data.load_digits()
    # The right half of a pair is a real digit with the right-hand label.
    match = np.all(digits.images == md.x_train[0, :, 8:][None], axis=(1, 2, 3))
    assert md.y_train[0, 1] in digits.labels[match]
    da = mtl.data.digits_attributes(seed=0)
    assert da.task_names == ("odd", "ge5", "prime", "loop")
    assert da.x_train.shape[1:] == (8, 8, 1) and da.y_train.shape[1] == 4
    n = len(da.y_train) + len(da.y_test)
    assert n == len(digits.labels)
    # 7 is odd, >= 5, prime and has no loop; 8 has a loop.
    labels = np.concatenate([da.y_train, da.y_test])
    assert set(map(tuple, labels)) <= {
        tuple(int(d in mtl.data._multi_digits.ATTRIBUTES[a]) for a in da.task_names)
        for d in range(10)
    }
    with pytest.raises(ValueError, match="num_train"):
        mtl.data.multi_digits(num_train=0)


@pytest.mark.reproduction
def test_experiment_runs(tmp_path, monkeypatch, repro_fast):
    if repro_fast:
        monkeypatch.setattr(architectures, "FAST", (25, 2))
        monkeypatch.setattr(architectures, "ARCHITECTURES", ("hps", "mmoe"))
        monkeypatch.setattr(architectures, "BALANCERS", ("ew",))
        monkeypatch.setattr(architectures, "DATASETS", ("digits_attributes",))
    result = architectures.run(fast=True, out_dir=tmp_path, seed=4)
    assert result.seeds[:2] == [4, 5]
    assert (tmp_path / "architectures.png").stat().st_size > 0
    assert all(
        np.all(np.isfinite(v)) and len(v) == len(result.seeds) for v in result.per_seed.values()
    )
    # Every run beats the constant predictor's 0.5 on the binary attributes.
    assert all(np.mean(v) > 0.5 for k, v in result.per_seed.items() if "attributes" in k)
    _registry.write_results(result, tmp_path, name="architectures", form="fast", wall_time_s=1.0)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert "digits_attributes/hps/ew" in payload["methods"] or not repro_fast
