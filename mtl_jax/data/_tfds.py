"""Finding, preparing and reading mtl_jax's offline TFDS builders without TensorFlow.

A builder is prepared on first use into a cache directory (the ``data_dir``
argument, else ``$MTL_JAX_DATA_DIR``, else ``~/.cache/mtl_jax/tensorflow_datasets``) as
``array_record`` files, and read back through ``tfds.data_source``: random
access, no TensorFlow. Preparation holds a lock file in the cache directory, so
that several processes (pytest-xdist workers, data-parallel hosts sharing a
file system that supports ``flock``) asking for the same builder at once prepare
it once and all read the finished files.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import _builders, _icu_builder

try:  # POSIX; elsewhere TFDS's own write-then-rename is all that guards a prepare
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

#: The offline builders by TFDS name.
BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "digits": _builders.UCIDigits,
    "multi_digits": _builders.MultiDigits,
    "digits_attributes": _builders.DigitsAttributes,
    "shifted_digits": _builders.ShiftedDigits,
    "label_shifted_digits": _builders.LabelShiftedDigits,
    "grad_norm_toy": _builders.GradNormToy,
    "icu_alarms": _icu_builder.ICUAlarmsBuilder,
}


def list_builders() -> list[str]:
    """The names of mtl_jax's offline TFDS builders.

    ``digits``, ``multi_digits``, ``digits_attributes``, ``shifted_digits``,
    ``label_shifted_digits``, ``grad_norm_toy`` and ``icu_alarms``; each is also registered with
    TFDS (``tfds.list_builders(with_community_datasets=False)`` lists them).

    Returns:
      The names, in the order ``mtl-jax data list`` prints them.
    """
    return list(BUILDERS)


def default_data_dir() -> pathlib.Path:
    """The cache directory builders prepare into when no ``data_dir`` is passed.

    ``$MTL_JAX_DATA_DIR`` when set, else ``~/.cache/mtl_jax/tensorflow_datasets``
    (``mtl-jax ... --data-dir DIR`` passes ``DIR`` down as ``data_dir`` instead).

    Returns:
      The directory (not created).
    """
    env = os.environ.get("MTL_JAX_DATA_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "mtl_jax" / "tensorflow_datasets"


def get_builder(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    config: Mapping[str, int] | str | None = None,
) -> tfds.core.DatasetBuilder:
    """The TFDS builder ``name`` reading from and writing to ``data_dir``.

    Args:
      name: one of :func:`list_builders` (``digits``, ``multi_digits``,
        ``digits_attributes``, ``shifted_digits``, ``label_shifted_digits``,
        ``grad_norm_toy``).
      data_dir: the cache directory; ``None`` for :func:`default_data_dir`.
      config: the generator's arguments for builders that take them
        (``multi_digits``: ``num_train``, ``num_test``, ``seed``;
        ``digits_attributes``: ``seed``; ``grad_norm_toy``: ``num_tasks``,
        ``num_train``, ``num_test``, ``seed``; ``icu_alarms``: see
        :class:`~mtl_jax.data.ICUAlarmsBuilder`), as a dict of ints (unnamed ones
        keep their defaults) or a config name; ``None`` for the defaults.

    Returns:
      The builder, configured for ``array_record`` files (not yet prepared).

    Raises:
      ValueError: ``name`` is not an offline builder, or ``config`` names an
        argument the builder does not take.
    """
    if name not in BUILDERS:
        raise ValueError(f"name must be one of {sorted(BUILDERS)}, got {name!r}")
    cls = BUILDERS[name]
    kwargs = {}
    if config is not None:
        if not cls.PARAMS:
            raise ValueError(
                f"config must be None for {name!r} (it has no arguments), got {config!r}"
            )
        if isinstance(config, str):
            if cls.get_builder_config(config) is None:
                raise ValueError(f"config must be a config name of {name!r}, got {config!r}")
            kwargs["config"] = config
        else:
            kwargs["config"] = cls.config_name(dict(config))
    data_dir = default_data_dir() if data_dir is None else data_dir
    return cls(data_dir=os.fspath(data_dir), file_format="array_record", **kwargs)


@contextlib.contextmanager
def _prepare_lock(data_dir: pathlib.Path, name: str) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``data_dir/.name.lock`` (no-op without ``fcntl``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(data_dir / f".{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress_bar(builder: tfds.core.DatasetBuilder, quiet: bool) -> Iterator[None]:
    """One tqdm bar counting the examples generated; TFDS's own bars and messages hidden."""
    from tensorflow_datasets.core.utils import tqdm_utils
    from tqdm.auto import tqdm

    desc = f"preparing {builder.name}" + (
        f"/{builder.builder_config.name}" if builder.builder_config else ""
    )
    disable = quiet or not sys.stderr.isatty()
    was_active = tqdm_utils._active
    tqdm_utils.display_progress_bar(False)
    with tqdm(desc=desc, unit=" examples", file=sys.stderr, disable=disable, leave=False) as bar:
        builder._on_example = bar.update
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            builder._on_example = None
            tqdm_utils.display_progress_bar(was_active)


def prepare(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    config: Mapping[str, int] | str | None = None,
    quiet: bool = False,
) -> tfds.core.DatasetBuilder:
    """Generates builder ``name`` into ``data_dir`` unless it is already there.

    Safe to call from several processes at once: the first takes a lock file in
    ``data_dir`` and prepares (TFDS writes into a temporary directory and renames
    it when complete); the others wait for the lock, then find the data prepared.

    Args:
      name: an offline builder's name (see :func:`get_builder`).
      data_dir: the cache directory; ``None`` for :func:`default_data_dir`.
      config: the generator's arguments (see :func:`get_builder`).
      quiet: hide the progress bar (``mtl-jax ... --quiet``). The bar shows only
        when stderr is a terminal.

    Returns:
      The prepared builder (``builder.info`` gives its splits and sizes).
    """
    builder = get_builder(name, data_dir=data_dir, config=config)
    root = pathlib.Path(default_data_dir() if data_dir is None else data_dir)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # TFDS warns while a builder is not yet written
    try:
        if builder.is_prepared():
            return builder
        with _prepare_lock(root, name):
            builder = get_builder(name, data_dir=data_dir, config=config)  # re-read under the lock
            if not builder.is_prepared():
                with _progress_bar(builder, quiet):
                    builder.download_and_prepare(file_format="array_record")
    finally:
        absl_logger.setLevel(level)
    return builder


def _stack(records: list[Any]) -> Any:
    """Stacks a list of (nested dicts of) NumPy values along a new leading axis."""
    first = records[0]
    if isinstance(first, Mapping):
        return {k: _stack([r[k] for r in records]) for k in first}
    return np.stack([np.asarray(r) for r in records])


def load(
    name: str,
    *,
    split: str,
    data_dir: str | os.PathLike | None = None,
    config: Mapping[str, int] | str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """One split of an offline builder as NumPy arrays, prepared into the cache on first use.

    The first call prepares the builder into the cache directory (with a progress
    bar, see :func:`prepare`); every call reads the split back through
    ``tfds.data_source`` (no TensorFlow) and stacks its records in generation
    order, so ``load("multi_digits", split="train", config={"seed": 3})["image"]``
    equals ``multi_digits(seed=3).x_train``.

    Args:
      name: an offline builder's name (see :func:`list_builders`).
      split: a split name (``"train"``, ``"test"``, or a builder-specific one).
      data_dir: the cache directory; ``None`` for :func:`default_data_dir`.
      config: the generator's arguments for builders that take them (see
        :func:`get_builder`); ``None`` for the defaults.
      quiet: hide the preparation progress bar.

    Returns:
      A dict of feature name to ``[N, ...]`` array (a nested dict for nested
      features, e.g. ``digits_attributes``'s ``attributes``).

    Raises:
      ValueError: an unknown ``name``, ``split`` or ``config``.
    """
    source = data_source(name, split=split, data_dir=data_dir, config=config, quiet=quiet)
    return _stack(source.__getitems__(range(len(source))))


def data_source(
    name: str,
    *,
    split: str,
    data_dir: str | os.PathLike | None = None,
    config: Mapping[str, int] | str | None = None,
    quiet: bool = False,
) -> tfds.data_sources.ArrayRecordDataSource:
    """A random-access source over one split, prepared on first use.

    Example records are dicts of NumPy values (``source[i]``; ``len(source)``),
    ready for :func:`mtl_jax.data.make_loader`. Works without TensorFlow.

    Args:
      name: an offline builder's name (see :func:`get_builder`).
      split: a split name (``"train"``, ``"test"``, or a builder-specific one).
      data_dir: the cache directory; ``None`` for :func:`default_data_dir`.
      config: the generator's arguments (see :func:`get_builder`).
      quiet: hide the preparation progress bar.

    Returns:
      The split's ``ArrayRecordDataSource``.

    Raises:
      ValueError: ``split`` is not one of the builder's splits.
    """
    builder = prepare(name, data_dir=data_dir, config=config, quiet=quiet)
    splits = sorted(builder.info.splits.keys())
    if split not in splits:
        raise ValueError(f"split must be one of {splits} for {name!r}, got {split!r}")
    return builder.as_data_source(split=split)


def load_icu_alarms(
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    **params: int,
) -> dict[str, np.ndarray]:
    """One split of the ``icu_alarms`` builder as NumPy arrays, prepared on first use.

    :func:`mtl_jax.data.load` for ``icu_alarms``: prepares the config ``params``
    (see :class:`ICUAlarmsBuilder`) into ``data_dir`` unless it is there (under
    the cache's lock, with a progress bar), then reads the split back through
    ``tfds.data_source`` (no TensorFlow) in generation order, so
    ``load_icu_alarms("train", seed=3, num_train=n, ...)["windows"]`` equals
    ``icu_alarms(3, num_windows=n + num_test, ...).windows[:n]``.

    Schwab et al., "Not to Cry Wolf", ICML 2018, https://arxiv.org/abs/1802.05027.

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: the TFDS cache directory; ``None`` for
        :func:`mtl_jax.data.default_data_dir`.
      quiet: hide the preparation progress bar.
      **params: generator arguments (``num_train``, ``num_test``, ``num_samples``,
        ``sampling_rate``, ``seed``); unnamed ones keep their defaults.

    Returns:
      ``{"windows": [N, 3, T] float32, "missing": [N, 3] float32, "label": [N]
      int64, "alarm_type": [N] int64}``.

    Raises:
      ValueError: an unknown split or generator argument.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return load("icu_alarms", split=split, data_dir=data_dir, config=params, quiet=quiet)
