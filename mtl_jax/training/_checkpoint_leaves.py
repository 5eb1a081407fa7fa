"""A state pytree as named, orbax-friendly arrays plus a JSON layout, and back.

Used by :class:`mtl_jax.training.Checkpointer`. Each leaf is named by its
path (``opt_state/0/mu/params/Dense_0/kernel``). Typed PRNG keys become their
raw ``uint32`` key data; zero-size leaves are not stored (their shape and dtype
are their whole content); every leaf readable on this host gets a CRC-32 of its
bytes. Decoding rebuilds the template's tree structure, so a ``TrainState`` comes
back as a ``TrainState``, with each leaf placed like the template's leaf.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import jax
import numpy as np

PyTree = Any


class LayoutMismatch(ValueError):
    """A readable checkpoint saved from a state of another structure, shape or dtype."""


class CorruptCheckpointError(ValueError):
    """A checkpoint whose bytes fail a check: a checksum, its metadata, or a truncated file."""


def _entry_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _leaf_name(path) -> str:
    return "/".join(re.sub(r"[^A-Za-z0-9_.-]", "_", _entry_name(e)) for e in path) or "_"


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _as_array(name: str, leaf):
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return leaf
    if isinstance(leaf, bool | int | float | complex | np.generic):
        return np.asarray(leaf)
    raise TypeError(
        f"state leaf {name!r} is a {type(leaf).__name__}, not an array; "
        "checkpointed states must be pytrees of arrays"
    )


def _named_leaves(tree: PyTree) -> list[tuple[str, Any]]:
    out, seen = [], set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = _leaf_name(path)
        if name in seen:
            raise ValueError(f"two leaves of the state share the checkpoint name {name!r}")
        seen.add(name)
        out.append((name, leaf))
    return out


def _host_copy(x) -> np.ndarray | None:
    """A host copy of a leaf's full value, or None for an array sharded across processes."""
    if isinstance(x, jax.Array):
        if x.is_fully_addressable:
            return np.array(jax.device_get(x))
        if x.is_fully_replicated:
            return np.array(x.addressable_data(0))
        return None
    return np.array(x)


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).tobytes())


def _nest(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return tree


def _unnest(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else k
        flat.update(_unnest(v, name) if isinstance(v, dict) else {name: v})
    return flat


def encode(state: PyTree) -> tuple[dict, list[dict]]:
    """Returns ``(arrays, layout)``: a nested dict of the stored leaves and one JSON entry per leaf.

    Leaves readable on this host are stored as host copies (so donating the
    state to the next step cannot race an asynchronous write); arrays sharded
    across processes are stored as they are.
    """
    arrays, layout = {}, []
    for name, leaf in _named_leaves(state):
        leaf = _as_array(name, leaf)
        data = jax.random.key_data(leaf) if _is_key(leaf) else leaf
        shape = [int(d) for d in np.shape(data)]
        entry = {"name": name, "shape": shape, "dtype": str(np.dtype(data.dtype))}
        if _is_key(leaf):
            entry["key_impl"] = str(jax.random.key_impl(leaf))
        entry["stored"] = int(np.prod(shape, dtype=np.int64)) != 0
        if entry["stored"]:
            host = _host_copy(data)
            if host is not None:
                entry["crc32"] = _crc(host)
            arrays[name] = data if host is None else host
        layout.append(entry)
    return _nest(arrays), layout


def restore_target(template: PyTree, layout: list[dict], where: str) -> tuple[dict, list]:
    """Checks ``layout`` against ``template``; returns orbax's restore target and a plan.

    A zero-size template leaf is a placeholder and takes the saved shape; any
    other difference of structure, shape or dtype raises :class:`LayoutMismatch`
    naming the leaf (``where`` names the checkpoint in the message).
    """
    saved = {e["name"]: e for e in layout}
    named = _named_leaves(template)
    if [n for n, _ in named] != [e["name"] for e in layout]:
        only_saved = sorted(set(saved) - {n for n, _ in named})
        only_template = sorted({n for n, _ in named} - set(saved))
        raise LayoutMismatch(
            f"{where} holds a state of another structure than the template: leaves only in "
            f"the checkpoint {only_saved[:5]}, only in the template {only_template[:5]}"
        )
    target, plan = {}, []
    for name, leaf in named:
        entry, is_key = saved[name], _is_key(leaf)
        ref = jax.random.key_data(leaf) if is_key else _as_array(name, leaf)
        dtype, shape, tshape = np.dtype(ref.dtype), tuple(entry["shape"]), tuple(np.shape(ref))
        if str(dtype) != entry["dtype"]:
            raise LayoutMismatch(
                f"state leaf {name!r} has dtype {entry['dtype']} in {where} but {dtype} "
                "in the template"
            )
        if shape != tshape and int(np.prod(tshape, dtype=np.int64)) != 0:
            raise LayoutMismatch(
                f"state leaf {name!r} has shape {shape} in {where} but {tshape} in the template"
            )
        if entry["stored"]:
            if _host_side(ref):
                target[name] = np.zeros(shape, dtype)
            else:
                target[name] = jax.ShapeDtypeStruct(shape, dtype, sharding=ref.sharding)
        plan.append((name, leaf, ref, entry, shape, dtype))
    return _nest(target), plan


def decode(template: PyTree, plan: list, restored: dict | None, where: str) -> PyTree:
    """Rebuilds the template's structure from orbax's restored arrays, checking CRCs."""
    arrays = _unnest(restored) if restored else {}
    leaves = []
    for name, leaf, ref, entry, shape, dtype in plan:
        if entry["stored"]:
            value = arrays[name]
            host = _host_copy(value) if "crc32" in entry else None
            if host is not None and _crc(host) != entry["crc32"]:
                raise CorruptCheckpointError(
                    f"{where} is corrupt: leaf {name!r} fails its CRC-32 check"
                )
        else:
            value = np.zeros(shape, dtype)
        value = _place_like(value, ref)
        if isinstance(leaf, bool | int | float | complex):
            value = type(leaf)(value)
        if _is_key(leaf):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf))
        leaves.append(value)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


def _host_side(ref) -> bool:
    """Whether a template leaf is restored from a host copy (not sharded across processes)."""
    if isinstance(ref, jax.Array):
        return ref.is_fully_addressable or ref.is_fully_replicated
    return True


def _place_like(value, ref):
    """Puts a restored value where the template leaf lives (device, sharding, or host)."""
    if isinstance(ref, jax.Array):
        if isinstance(value, jax.Array) and value.sharding == ref.sharding:
            return value
        host = np.asarray(value)
        if not getattr(ref, "committed", True):
            # Uncommitted like the template (e.g. a fresh init), so jit reuses its executable.
            return jax.device_put(host)
        return jax.make_array_from_callback(host.shape, ref.sharding, lambda idx: host[idx])
    return np.asarray(value, dtype=ref.dtype)
