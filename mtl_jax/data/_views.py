"""Multi-task views of public TFDS datasets, and a reader for preprocessed NYUv2.

A view wraps ``tfds.data_source(name)`` (read without TensorFlow from a data
directory the user has prepared) and maps every record to the multi-task form
the library's models and losses take: float32 images in ``[0, 1]`` plus one
entry per task. Views are random-access sources that :func:`mtl_jax.data.make_loader`
accepts.

- ``celeb_a``: 40 boolean attributes as 40 binary tasks (``attributes``,
  ``[40]`` in :data:`CELEB_A_ATTRIBUTES` order) and the 10 landmark coordinates
  as a regression task (``landmarks``); Liu et al. 2015 (https://arxiv.org/abs/1411.7766),
  used as 40 tasks by Sener & Koltun 2018 (https://arxiv.org/abs/1810.04650).
- ``cifar100``: the fine (100) and coarse (20) labels as two tasks.
- ``mnist`` and ``svhn_cropped``: digits as domains for adaptation, both as
  32×32×3 images with a ``domain`` id (0 MNIST, 1 SVHN).
- ``omniglot``: the alphabet as the task, the character within it as the label.
- NYUv2 (:func:`nyuv2_source`): the preprocessed 3-task directory (13-class
  segmentation, depth, surface normals; Liu et al. 2019, https://arxiv.org/abs/1803.10704).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

#: The 40 CelebA attribute names, in the order of a ``celeb_a`` view's ``attributes``.
CELEB_A_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns "
    "Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
_LANDMARKS = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
    "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
).split()
_DOMAINS = {"mnist": 0, "svhn_cropped": 1}


def _unit(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float32) / 255.0


def _celeb_a(r: dict) -> dict:
    attrs = np.array([bool(r["attributes"][a]) for a in CELEB_A_ATTRIBUTES])
    marks = np.array([r["landmarks"][m] for m in _LANDMARKS], np.float32)
    return {"image": _unit(r["image"]), "attributes": attrs, "landmarks": marks}


def _cifar100(r: dict) -> dict:
    return {
        "image": _unit(r["image"]),
        "fine": np.int64(r["label"]),
        "coarse": np.int64(r["coarse_label"]),
    }


def _domain(name: str) -> Callable[[dict], dict]:
    def view(r: dict) -> dict:
        image = _unit(r["image"])
        if image.shape[-1] == 1:  # MNIST 28×28×1 -> 32×32×3, as SVHN
            image = np.repeat(np.pad(image, ((2, 2), (2, 2), (0, 0))), 3, axis=-1)
        return {"image": image, "label": np.int64(r["label"]), "domain": np.int64(_DOMAINS[name])}

    return view


def _omniglot(r: dict) -> dict:
    image = _unit(r["image"])[..., :1]  # the three channels are equal
    return {"image": image, "task": np.int64(r["alphabet"]), "label": np.int64(r["label"])}


_VIEWS: dict[str, Callable[[dict], dict]] = {
    "celeb_a": _celeb_a,
    "cifar100": _cifar100,
    "mnist": _domain("mnist"),
    "svhn_cropped": _domain("svhn_cropped"),
    "omniglot": _omniglot,
}


class _Mapped:
    """A random-access source whose records are ``fn(source[i])``."""

    def __init__(self, source: Any, fn: Callable[[dict], dict]):
        self._source, self._fn = source, fn

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return self._fn(self._source[index])

    def __repr__(self) -> str:
        return f"MultiTaskView({self._source!r})"


def multitask_view(name: str, *, split: str, data_dir: str | os.PathLike | None = None) -> Any:
    """A public TFDS dataset as a random-access source of multi-task records.

    The dataset must already be prepared in ``data_dir`` (e.g. by ``tfds build``
    or a download); nothing is downloaded here. Records (all images float32 in
    ``[0, 1]``):

    - ``celeb_a``: ``image``, ``attributes`` bool ``[40]``, ``landmarks`` float32 ``[10]``.
    - ``cifar100``: ``image``, ``fine`` (100 classes), ``coarse`` (20 classes).
    - ``mnist``, ``svhn_cropped``: ``image`` ``[32, 32, 3]``, ``label``, ``domain`` (0, 1).
    - ``omniglot``: ``image`` ``[105, 105, 1]``, ``task`` (alphabet), ``label``.

    Args:
      name: one of ``celeb_a``, ``cifar100``, ``mnist``, ``svhn_cropped``, ``omniglot``.
      split: the TFDS split (e.g. ``"train"``).
      data_dir: the TFDS data directory; ``None`` for TFDS's default.

    Returns:
      A source with ``len`` and ``__getitem__`` for :func:`mtl_jax.data.make_loader`.

    Raises:
      ValueError: ``name`` has no view.
    """
    if name not in _VIEWS:
        raise ValueError(f"name must be one of {sorted(_VIEWS)}, got {name!r}")
    import tensorflow_datasets as tfds

    kwargs = {} if data_dir is None else {"data_dir": os.fspath(data_dir)}
    return _Mapped(tfds.data_source(name, split=split, **kwargs), _VIEWS[name])


class _NYUv2:
    def __init__(self, root: pathlib.Path, count: int):
        self._root, self._count = root, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self._count:
            raise IndexError(f"index {index} out of range for {self._count} records")
        load = lambda kind: np.load(self._root / kind / f"{index}.npy")
        image = load("image").astype(np.float32)
        return {
            "image": image,
            "segmentation": load("label").astype(np.int64),
            "depth": load("depth").astype(np.float32),
            "normal": load("normal").astype(np.float32),
        }


def nyuv2_source(directory: str | os.PathLike, *, split: str) -> Any:
    """The preprocessed 3-task NYUv2 (segmentation, depth, normals) from a local directory.

    Reads the widely used layout ``DIR/{train,val}/{image,label,depth,normal}/{i}.npy``
    (images ``[H, W, 3]``, 13-class labels ``[H, W]`` with ``-1`` for unlabelled
    pixels, depth ``[H, W, 1]``, unit normals ``[H, W, 3]``), as distributed with
    MTAN (Liu et al. 2019, https://arxiv.org/abs/1803.10704). TFDS's
    ``nyu_depth_v2`` has only RGB and depth, hence this reader.

    Args:
      directory: the dataset root (holding ``train/`` and ``val/``).
      split: ``"train"`` or ``"val"``.

    Returns:
      A random-access source of dicts with ``image``, ``segmentation``, ``depth``
      and ``normal``.

    Raises:
      ValueError: ``split`` is neither ``"train"`` nor ``"val"``, or the split's
        directories are missing or hold different numbers of files.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = pathlib.Path(directory) / split
    counts = {}
    for kind in ("image", "label", "depth", "normal"):
        if not (root / kind).is_dir():
            raise ValueError(f"directory must hold {split}/{kind}/, missing in {directory!s}")
        counts[kind] = len(list((root / kind).glob("*.npy")))
    if len(set(counts.values())) != 1 or not counts["image"]:
        raise ValueError(f"directory {directory!s} has unequal or empty {split} folders: {counts}")
    return _NYUv2(root, counts["image"])
