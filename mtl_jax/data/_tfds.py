"""Finding, preparing and reading mtl_jax's offline TFDS builders without TensorFlow.

A builder is prepared on first use into a cache directory (``$MTL_JAX_DATA_DIR``,
else ``~/.cache/mtl_jax/tensorflow_datasets``) as ``array_record`` files, with
TFDS's progress bars, and read back through ``tfds.data_source``: random access,
no TensorFlow.
"""

from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds

from mtl_jax.data import _builders, _icu_builder

#: The offline builders by TFDS name.
BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "multi_digits": _builders.MultiDigits,
    "digits_attributes": _builders.DigitsAttributes,
    "shifted_digits": _builders.ShiftedDigits,
    "label_shifted_digits": _builders.LabelShiftedDigits,
    "grad_norm_toy": _builders.GradNormToy,
    "icu_alarms": _icu_builder.ICUAlarmsBuilder,
}


def list_builders() -> list[str]:
    """The names of mtl_jax's offline TFDS builders.

    ``multi_digits``, ``digits_attributes``, ``shifted_digits``,
    ``label_shifted_digits`` and ``grad_norm_toy``; each is also registered with
    TFDS (``tfds.list_builders(with_community_datasets=False)`` lists them).

    Returns:
      The names, in the order ``mtl-jax data list`` prints them.
    """
    return list(BUILDERS)


def default_data_dir() -> pathlib.Path:
    """The cache directory builders prepare into.

    ``$MTL_JAX_DATA_DIR`` when set, else ``~/.cache/mtl_jax/tensorflow_datasets``.

    Returns:
      The directory (not created).
    """
    env = os.environ.get("MTL_JAX_DATA_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "mtl_jax" / "tensorflow_datasets"


def get_builder(
    name: str, *, data_dir: str | os.PathLike | None = None
) -> tfds.core.DatasetBuilder:
    """The TFDS builder ``name`` reading from and writing to ``data_dir``.

    Args:
      name: one of :func:`list_builders` (``multi_digits``, ``digits_attributes``,
        ``shifted_digits``, ``label_shifted_digits``, ``grad_norm_toy``).
      data_dir: the cache directory; ``None`` for :func:`default_data_dir`.

    Returns:
      The builder, configured for ``array_record`` files (not yet prepared).

    Raises:
      ValueError: ``name`` is not an offline builder.
    """
    if name not in BUILDERS:
        raise ValueError(f"name must be one of {sorted(BUILDERS)}, got {name!r}")
    data_dir = default_data_dir() if data_dir is None else data_dir
    return BUILDERS[name](data_dir=os.fspath(data_dir), file_format="array_record")


def prepare(name: str, *, data_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
    """Generates builder ``name`` into ``data_dir`` unless it is already there.

    Args:
      name: an offline builder's name (see :func:`get_builder`).
      data_dir: the cache directory; ``None`` for :func:`default_data_dir`.

    Returns:
      The prepared builder (``builder.info`` gives its splits and sizes).
    """
    builder = get_builder(name, data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return builder


def data_source(
    name: str, *, split: str, data_dir: str | os.PathLike | None = None
) -> tfds.data_sources.ArrayRecordDataSource:
    """A random-access source over one split, prepared on first use.

    Example records are dicts of NumPy values (``source[i]``; ``len(source)``),
    ready for :func:`mtl_jax.data.make_loader`. Works without TensorFlow.

    Args:
      name: an offline builder's name (see :func:`get_builder`).
      split: a split name (``"train"``, ``"test"``, or a builder-specific one).
      data_dir: the cache directory; ``None`` for :func:`default_data_dir`.

    Returns:
      The split's ``ArrayRecordDataSource``.

    Raises:
      ValueError: ``split`` is not one of the builder's splits.
    """
    builder = prepare(name, data_dir=data_dir)
    splits = sorted(builder.info.splits.keys())
    if split not in splits:
        raise ValueError(f"split must be one of {splits} for {name!r}, got {split!r}")
    return builder.as_data_source(split=split)
