"""``mtl_jax.data.load``: the offline builders' cache, its configs and concurrent preparation."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import mtl_jax as mtl


def test_the_test_cache_is_not_the_home_directory(data_cache):
    assert mtl.data.default_data_dir() == data_cache
    assert pathlib.Path.home() not in data_cache.parents


def test_load_equals_the_in_memory_generators(tmp_path, capsys):
    cfg = {"num_train": 60, "num_test": 30, "seed": 3}
    md = mtl.data.multi_digits(**cfg)
    for split, x, y in [("train", md.x_train, md.y_train), ("test", md.x_test, md.y_test)]:
        a = mtl.data.load("multi_digits", split=split, data_dir=tmp_path, config=cfg)
        np.testing.assert_array_equal(a["image"], x)
        np.testing.assert_array_equal(np.stack([a["left"], a["right"]], 1), y)
    # TFDS's own messages are hidden; the bar goes to stderr only on a terminal.
    assert capsys.readouterr().out == ""

    da = mtl.data.digits_attributes(seed=2, attributes=tuple(mtl.data._multi_digits.ATTRIBUTES))
    a = mtl.data.load("digits_attributes", split="test", data_dir=tmp_path, config={"seed": 2})
    np.testing.assert_array_equal(a["image"], da.x_test)
    cols = np.stack([a["attributes"][t] for t in da.task_names], 1)
    np.testing.assert_array_equal(cols, da.y_test)

    toy = mtl.data.toy_regression(3, num_train=5, num_test=7, seed=4)
    cfg = {"num_tasks": 3, "num_train": 5, "num_test": 7, "seed": 4}
    a = mtl.data.load("grad_norm_toy", split="test", data_dir=tmp_path, config=cfg)
    np.testing.assert_array_equal(a["x"], toy.x_test)
    np.testing.assert_array_equal(np.moveaxis(a["y"], 0, 1), toy.y_test)

    digits = mtl.data.load_digits()
    a = mtl.data.load("digits", split="train", data_dir=tmp_path)
    np.testing.assert_array_equal(a["image"], digits.images)
    np.testing.assert_array_equal(a["label"], digits.labels)


def test_load_rejects_bad_configs_and_splits(tmp_path):
    with pytest.raises(ValueError, match="config keys"):
        mtl.data.load("multi_digits", split="train", data_dir=tmp_path, config={"sead": 1})
    with pytest.raises(ValueError, match="non-negative int"):
        mtl.data.load("multi_digits", split="train", data_dir=tmp_path, config={"seed": -1})
    with pytest.raises(ValueError, match="no arguments"):
        mtl.data.load("digits", split="train", data_dir=tmp_path, config={"seed": 1})
    with pytest.raises(ValueError, match="split must be one of"):
        mtl.data.load("digits", split="test", data_dir=tmp_path)


def test_concurrent_preparations_of_one_builder(tmp_path):
    """Two processes prepare the same builder into one cache at once; both read the same data."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = pathlib.Path(__file__).with_name("prepare_worker.py")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    outs = [tmp_path / f"out{i}.npy" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(tmp_path / "cache"), str(barrier), "2", str(o)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for o in outs
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    ref = mtl.data.multi_digits(seed=7).x_test
    for o in outs:
        np.testing.assert_array_equal(np.load(o), ref)
    versions = [v for v in (tmp_path / "cache" / "multi_digits").glob("*/*") if v.is_dir()]
    assert [v.name for v in versions] == ["2.0.0"]
    assert not list((tmp_path / "cache").rglob("incomplete*"))


def _module_scalars() -> dict[tuple[str, str], str]:
    """Every module-level scalar (bool, number, string, path, None) of the loaded mtl_jax."""
    kinds = (bool, int, float, str, pathlib.PurePath, type(None))
    return {
        (name, attr): repr(value)
        for name, module in list(sys.modules.items())
        if name == "mtl_jax" or name.startswith("mtl_jax.")
        for attr, value in vars(module).items()
        if isinstance(value, kinds)
    }


def test_cli_passes_data_dir_and_quiet_down_and_sets_no_module_state(tmp_path, data_cache):
    from mtl_jax.experiments import _cli, _registry

    seen = []

    def probe(*, fast, out_dir, seed, data_dir=None, quiet=False):
        """Records the options it is given and where the data cache points."""
        seen.append((data_dir, quiet, mtl.data.default_data_dir()))
        return _registry.ExperimentResult(title="probe", columns=["m"], rows=[["a"]])

    _registry.register("zz-data-probe", help="probe", claim="c", num_seeds=(1, 1))(probe)
    try:
        _registry.available()  # import every experiment module before the snapshot
        before = _module_scalars()
        args = ["run", "zz-data-probe", "--out", str(tmp_path)]
        assert _cli.main([*args, "--data-dir", str(tmp_path / "cache"), "--quiet"]) == 0
        assert _module_scalars() == before  # the first run left no module state behind
        assert _cli.main(args) == 0  # so the second sees none of the first's options
    finally:
        _registry._REGISTRY.pop("zz-data-probe")
    assert seen == [(tmp_path / "cache", True, data_cache), (None, False, data_cache)]
