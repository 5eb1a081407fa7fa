"""The packaged experiments' data, read through the offline TFDS builders' cache.

Every experiment reads its data with :func:`mtl_jax.data.load`: the first run
prepares the builder into the cache directory (the ``data_dir`` the CLI passes
down from ``--data-dir``, else ``$MTL_JAX_DATA_DIR``, else
``~/.cache/mtl_jax/tensorflow_datasets``) with a progress bar (hidden when
``quiet``), later runs read the prepared ``array_record`` files. The arrays
are those of the in-memory generators (:func:`mtl_jax.data.multi_digits`,
:func:`mtl_jax.data.toy_regression`, ...) for the same arguments.
"""

from __future__ import annotations

import numpy as np

from mtl_jax import data
from mtl_jax.data._multi_digits import DEFAULT_ATTRIBUTES

__all__ = ["digits", "multitask_digits", "toy_regression"]


def digits(*, data_dir=None, quiet: bool = False) -> data.Digits:
    """Scikit-learn's 1,797 digits from the ``digits`` builder (= ``data.load_digits()``)."""
    a = data.load("digits", split="train", data_dir=data_dir, quiet=quiet)
    return data.Digits(a["image"], a["label"].astype(np.int32))


def multitask_digits(
    name: str,
    *,
    seed: int,
    num_train: int = 4000,
    num_test: int = 1000,
    data_dir=None,
    quiet: bool = False,
):
    """``multi_digits`` or ``digits_attributes`` (default tasks) for ``seed`` from its builder.

    Equal to ``mtl_jax.data.multi_digits(num_train=, num_test=, seed=)`` or
    ``mtl_jax.data.digits_attributes(seed=)``.
    """
    where = {"data_dir": data_dir, "quiet": quiet}
    if name == "multi_digits":
        cfg = {"num_train": num_train, "num_test": num_test, "seed": seed}
        tr, te = (data.load(name, split=s, config=cfg, **where) for s in ("train", "test"))
        y = lambda a: np.stack([a["left"], a["right"]], 1).astype(np.int32)
        return data.MultiTaskDigits(
            tr["image"], y(tr), te["image"], y(te), ("left", "right"), (10, 10)
        )
    if name == "digits_attributes":
        tr, te = (
            data.load(name, split=s, config={"seed": seed}, **where) for s in ("train", "test")
        )
        y = lambda a: np.stack([a["attributes"][t] for t in DEFAULT_ATTRIBUTES], 1).astype(np.int32)
        k = len(DEFAULT_ATTRIBUTES)
        return data.MultiTaskDigits(
            tr["image"], y(tr), te["image"], y(te), DEFAULT_ATTRIBUTES, (2,) * k
        )
    raise ValueError(f"name must be 'multi_digits' or 'digits_attributes', got {name!r}")


def toy_regression(
    num_tasks: int,
    *,
    num_train: int,
    num_test: int,
    seed: int,
    data_dir=None,
    quiet: bool = False,
) -> data.ToyRegression:
    """GradNorm's toy from the ``grad_norm_toy`` builder, as :func:`mtl_jax.data.toy_regression`."""
    cfg = {"num_tasks": num_tasks, "num_train": num_train, "num_test": num_test, "seed": seed}
    tr, te = (
        data.load("grad_norm_toy", split=s, config=cfg, data_dir=data_dir, quiet=quiet)
        for s in ("train", "test")
    )
    sigmas = np.linspace(1.0, 100.0, num_tasks).astype(np.float32)
    move = lambda y: np.ascontiguousarray(np.moveaxis(y, 0, 1))
    return data.ToyRegression(tr["x"], move(tr["y"]), te["x"], move(te["y"]), sigmas)
