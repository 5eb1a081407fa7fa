"""Tree helpers for task Jacobians: pytrees whose leaves carry a leading task axis.

A *task Jacobian* has the structure of ``params``; each leaf has shape
``[K, *param_leaf.shape]`` where ``K`` is the number of tasks. The helpers here
compute the Gram matrix ``G = J Jᵀ`` leaf by leaf (no flattening of the whole
parameter vector), per-task norms, and the task-axis contraction ``Σ_k w_k J_k``.
They are the only place such contractions are written; balancers call them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "MaskSpec",
    "TreeMask",
    "combine",
    "gram",
    "num_tasks",
    "resolve_mask",
    "sum_tasks",
    "task_norms",
]

PyTree = Any


class TreeMask(NamedTuple):
    """A mask rule that looks at the whole tree: ``select(tree) -> pytree of bools``.

    For choices a per-leaf predicate cannot express, such as "the last shared
    leaf with two or more dimensions" (GradNorm's default layer).
    """

    select: Callable[[Any], Any]


MaskSpec = PyTree | str | tuple[str, ...] | Callable[[tuple, Any], bool] | TreeMask | None
"""Which leaves to act on; see :func:`resolve_mask`.

``None`` (every leaf), a key-path prefix such as ``"encoder"`` (or a tuple of
them), a pytree of bools with the tree's structure, ``fn(path, leaf) -> bool``, or
a :class:`TreeMask`.
"""


def num_tasks(task_tree: PyTree) -> int:
    """The size ``K`` of the leading task axis, checked equal across leaves."""
    leaves = jax.tree_util.tree_leaves_with_path(task_tree)
    if not leaves:
        raise ValueError("the task Jacobian has no leaves")
    sizes = {}
    for path, leaf in leaves:
        if jnp.ndim(leaf) == 0:
            raise ValueError(
                f"leaf {jax.tree_util.keystr(path)} is a scalar: task-Jacobian leaves need a "
                "leading task axis"
            )
        sizes.setdefault(int(jnp.shape(leaf)[0]), jax.tree_util.keystr(path))
    if len(sizes) != 1:
        detail = ", ".join(f"{p}: {k}" for k, p in sizes.items())
        raise ValueError(f"leaves disagree on the number of tasks K ({detail})")
    return next(iter(sizes))


def _key_name(key: Any) -> str:
    """The name of one key-path entry: a dict key, attribute name or index."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_names(path: tuple) -> tuple[str, ...]:
    return tuple(_key_name(k) for k in path)


def _is_prefix_spec(mask: Any) -> bool:
    if isinstance(mask, str):
        return True
    return (
        isinstance(mask, (tuple, list)) and len(mask) > 0 and all(isinstance(m, str) for m in mask)
    )


def _prefix_matches(names: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    if names[: len(prefix)] == prefix:
        return True
    # Flax variable dicts: ``{"params": {...}}`` -- "encoder" also matches
    # ``params/encoder/...`` unless the prefix names the collection itself.
    return len(names) > 0 and names[0] == "params" and names[1 : len(prefix) + 1] == prefix


def _split_prefix(prefix: str) -> tuple[str, ...]:
    parts = tuple(p for p in prefix.split("/") if p)
    if not parts:
        raise ValueError(f"shared= path prefix must name at least one key, got {prefix!r}")
    return parts


def resolve_mask(mask: MaskSpec, tree: PyTree) -> PyTree:
    """Turns a mask spec (the ``shared=`` of every balancer) into a pytree of bools.

    The accepted specs:

    * ``None``: every leaf is selected. As ``shared=``, this means *every*
      parameter is treated as shared, so task-specific heads are balanced too
      (their rows of the task Jacobian are zero for the other tasks, which still
      changes the weights a Gram method computes). Pass the encoder's prefix to
      balance only the shared trunk, as torchjd's ``mtl_backward`` does.
    * a key-path prefix: a string such as ``"encoder"`` or ``"encoder/Dense_0"``
      (key names joined by ``/``), or a tuple of such strings. A leaf is selected
      when its key path starts with one of the prefixes; a leading Flax
      ``"params"`` collection is skipped, so ``"encoder"`` selects both
      ``params["encoder"]`` and ``params["params"]["encoder"]``. A prefix that
      selects no leaf raises ``ValueError`` listing the tree's top-level keys.
    * a pytree of bools with ``tree``'s structure (a prefix tree is not accepted),
      e.g. :meth:`mtl_jax.models.HardParameterSharing.shared_mask`.
    * a callable ``fn(path, leaf) -> bool``, where ``path`` is the leaf's key path.

    Args:
      mask: the spec, one of the above, or a :class:`TreeMask`.
      tree: the pytree whose leaves are selected (params or a task Jacobian).

    Returns:
      A pytree of Python bools with the structure of ``tree``.

    Raises:
      ValueError: if a pytree mask's structure differs from ``tree``'s, or a
        prefix selects nothing.
      TypeError: if a tuple/list mixes strings with other values.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"encoder": {"w": jnp.ones(2)}, "heads": {"w": jnp.ones((2, 3))}}
      >>> resolve_mask("encoder", params)
      {'encoder': {'w': True}, 'heads': {'w': False}}
    """
    if mask is None:
        return jax.tree_util.tree_map(lambda _: True, tree)
    if isinstance(mask, TreeMask):
        mask = mask.select(tree)
    elif _is_prefix_spec(mask):
        raw = (mask,) if isinstance(mask, str) else tuple(mask)
        prefixes = [_split_prefix(p) for p in raw]
        out = jax.tree_util.tree_map_with_path(
            lambda p, _: any(_prefix_matches(_path_names(p), q) for q in prefixes), tree
        )
        if not any(jax.tree_util.tree_leaves(out)):
            tops = sorted(
                {"/".join(_path_names(p)[:2]) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}
            )
            raise ValueError(
                f"shared={mask!r} selects no leaf; the tree's top-level key paths are {tops}"
            )
        return out
    elif isinstance(mask, (tuple, list)) and any(isinstance(m, str) for m in mask):
        raise TypeError(f"a shared= prefix tuple must hold only strings, got {mask!r}")
    elif callable(mask):
        return jax.tree_util.tree_map_with_path(lambda p, x: bool(mask(p, x)), tree)
    tree_def = jax.tree_util.tree_structure(tree)
    mask_def = jax.tree_util.tree_structure(mask)
    if tree_def != mask_def:
        raise ValueError(f"mask structure {mask_def} does not match the tree's {tree_def}")
    return jax.tree_util.tree_map(bool, mask)


def _selected(jac: PyTree, mask: MaskSpec) -> list[jax.Array]:
    if mask is None:  # every leaf: nothing to resolve
        leaves = jax.tree_util.tree_leaves(jac)
    else:
        m = resolve_mask(mask, jac)
        leaves = [
            x
            for x, keep in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(m))
            if keep
        ]
    if not leaves:
        raise ValueError("the mask selects no leaf of the task Jacobian")
    return leaves


# Blocked Gram contraction on XLA CPU (see _leaf_gram): columns per block, and the
# number of independent block loops (XLA's CPU runtime may run them on different
# cores). Measured on a 2-core Xeon, J [K, 10⁶]: see benchmarks/README.md.
GRAM_BLOCK = 4096
GRAM_PARTS = max(1, min(os.cpu_count() or 1, 8))
# From this many tasks on, the CPU contraction forms only the blocks on and above the
# diagonal (75 % of the FLOPs) and mirrors them. Below it the two smaller dots lose
# more speed on XLA CPU than the saved FLOPs gain: measured 1.1-1.6x *slower* at
# K = 10, 40, 80, 128 and 1.1x faster at K = 256 (benchmarks/README.md, "Findings").
GRAM_SYM_MIN_TASKS = 256


def _dot_nt(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b.T`` contracting the last axes, without materialising a transpose."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST)


def _mirror_upper(u: jax.Array) -> jax.Array:
    """The symmetric matrix whose upper triangle (diagonal included) is ``u``'s.

    Bitwise symmetric: every entry below the diagonal is a copy of its mirror.
    """
    i = jnp.arange(u.shape[0])
    return jnp.where(i[:, None] <= i[None, :], u, u.T)


def _block_loops(flat: jax.Array, block: int, parts: int, body, init):
    """Sums ``body(i)`` over the ``n // block`` column blocks in ``parts`` independent scans."""
    m = flat.shape[1] // block
    parts = max(1, min(parts, m))
    bounds = [(p * m) // parts for p in range(parts + 1)]
    out = None
    for lo, hi in itertools.pairwise(bounds):
        part, _ = jax.lax.scan(
            lambda acc, i: (jax.tree_util.tree_map(jnp.add, acc, body(i)), None),
            init,
            jnp.arange(lo, hi),
        )
        out = part if out is None else jax.tree_util.tree_map(jnp.add, out, part)
    return out


def _blocked_gram(flat: jax.Array, block: int, parts: int) -> jax.Array:
    """``flat @ flat.T`` as a sum of ``[K, block]`` column-block Gram matrices.

    XLA's CPU dot runs ``[K, n] × [n, K]`` with ``n ~ 10⁶`` at a few GFLOP/s: the
    output is tiny, so it neither parallelises nor blocks over it, and it streams
    both operands out of cache. Here ``parts`` independent ``lax.scan`` loops (one
    live block each, a dynamic slice of ``flat`` itself, no copy of J) each sum
    the Gram matrices of a contiguous run of blocks; XLA's CPU runtime may run the
    independent loops concurrently (measured: 1.4× over one loop at K=10, no gain at
    K=40, where the dot is compute-bound). The columns left over after the last whole
    block take one dot.
    """
    k, n = flat.shape
    m = n // block

    def body(i):
        x = jax.lax.dynamic_slice_in_dim(flat, i * block, block, axis=1)
        return _dot_nt(x, x)

    out = _block_loops(flat, block, parts, body, jnp.zeros((k, k), flat.dtype))
    if m * block < n:
        tail = flat[:, m * block :]
        out = out + _dot_nt(tail, tail)
    return out


def _sym_blocked_gram(flat: jax.Array, block: int, parts: int) -> jax.Array:
    """:func:`_blocked_gram` computing only the upper block triangle, then mirrored.

    With the rows split into a top half ``A`` (``h = ⌈K/2⌉`` rows) and the rest
    ``B``, each column block contributes ``A [A; B]ᵀ`` (``[h, K]``) and ``B Bᵀ``; the
    lower-left ``B Aᵀ`` is never formed, so the contraction costs
    ``(hK + (K-h)²) / K² ≈ 3/4`` of the plain one's FLOPs. The result is bitwise
    symmetric.
    """
    k, n = flat.shape
    m = n // block
    h = (k + 1) // 2

    def body(i):
        top = jax.lax.dynamic_slice(flat, (0, i * block), (h, block))
        low = jax.lax.dynamic_slice(flat, (h, i * block), (k - h, block))
        every = jax.lax.dynamic_slice_in_dim(flat, i * block, block, axis=1)
        return _dot_nt(top, every), _dot_nt(low, low)

    init = (jnp.zeros((h, k), flat.dtype), jnp.zeros((k - h, k - h), flat.dtype))
    top, low = _block_loops(flat, block, parts, body, init)
    upper = jnp.concatenate([top, jnp.pad(low, ((0, 0), (h, 0)))], axis=0)
    if m * block < n:
        tail = flat[:, m * block :]
        upper = upper + _dot_nt(tail, tail)
    return _mirror_upper(upper)


def _leaf_gram(flat: jax.Array, block: int, parts: int, symmetric: bool = False) -> jax.Array:
    """``flat @ flat.T`` for ``flat`` of shape ``[K, n]``: blocked on CPU, one dot elsewhere.

    Leaves with fewer than two blocks of columns use one dot everywhere; GPU and TPU
    dots need no blocking (``lax.platform_dependent`` picks the branch per backend).
    With ``symmetric``, the CPU branch forms only the upper block triangle
    (:func:`_sym_blocked_gram`).
    """
    n = flat.shape[1]
    if n < 2 * block:
        return _dot_nt(flat, flat)
    blocked = _sym_blocked_gram if symmetric and flat.shape[0] > 1 else _blocked_gram
    return jax.lax.platform_dependent(
        flat,
        cpu=lambda x: blocked(x, block, parts),
        default=lambda x: _dot_nt(x, x),
    )


def gram(jac: PyTree, mask: MaskSpec = None, *, symmetric: bool | None = None) -> jax.Array:
    """The ``[K, K]`` Gram matrix ``G = J Jᵀ`` over the selected leaves.

    ``G[i, j] = Σ_leaves ⟨J_i, J_j⟩``, accumulated in float32 (or wider if the
    leaves are wider) one leaf at a time. On CPU, leaves with at least
    ``2 · GRAM_BLOCK`` parameters are contracted in blocks of ``GRAM_BLOCK`` columns
    by ``GRAM_PARTS`` independent loops (2–4× faster than one XLA CPU dot for ``J``
    of shape ``[K, 10⁶]``; see ``_blocked_gram``); on GPU/TPU in one dot. The result
    is bitwise symmetric (its lower triangle is a copy of the upper one).

    Args:
      jac: a task Jacobian (every leaf has a leading axis of size ``K``).
      mask: which leaves enter the Gram matrix (see :func:`resolve_mask`).
      symmetric: on CPU, form only the blocks on and above the diagonal of each
        column block's contribution (``≈ 3/4`` of the FLOPs) and mirror them.
        ``None`` (default): when ``K ≥ GRAM_SYM_MIN_TASKS``, where it was measured
        faster; below that XLA CPU's smaller dots lose more than they save.

    Returns:
      The symmetric positive semi-definite ``[K, K]`` Gram matrix.

    Raises:
      TypeError: if ``symmetric`` is not a bool or ``None``.
    """
    if symmetric is not None and not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool or None, got {symmetric!r}")
    leaves = _selected(jac, mask)
    k = num_tasks(leaves)
    sym = k >= GRAM_SYM_MIN_TASKS if symmetric is None else symmetric
    dtype = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    out = jnp.zeros((k, k), dtype)
    for leaf in leaves:
        flat = jnp.reshape(leaf, (k, -1)).astype(dtype)
        out = out + _leaf_gram(flat, GRAM_BLOCK, GRAM_PARTS, sym)
    return _mirror_upper(out)


def task_norms(jac: PyTree, mask: MaskSpec = None) -> jax.Array:
    """Per-task Euclidean norms ``‖J_k‖₂`` over the selected leaves, shape ``[K]``."""
    leaves = _selected(jac, mask)
    k = num_tasks(leaves)
    dtype = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    sq = sum(jnp.sum(jnp.reshape(x, (k, -1)).astype(dtype) ** 2, axis=1) for x in leaves)
    return jnp.sqrt(sq)


def combine(weights: jax.typing.ArrayLike, jac: PyTree) -> PyTree:
    """The task-axis contraction ``Σ_k w_k J_k`` for every leaf.

    Args:
      weights: ``[K]`` task weights.
      jac: a task Jacobian.

    Returns:
      A pytree with ``jac``'s structure whose leaves have lost the task axis;
      each leaf keeps its dtype.
    """
    w = jnp.asarray(weights)
    k = num_tasks(jac)
    if w.shape != (k,):
        raise ValueError(f"weights have shape {w.shape}, expected ({k},)")

    def one(x):
        return jnp.tensordot(w.astype(x.dtype), x, axes=1)

    return jax.tree_util.tree_map(one, jac)


def sum_leading(x: jax.Array) -> jax.Array:
    """``Σ_k x[k]`` over the leading (task) axis, as unrolled elementwise adds.

    XLA CPU runs ``jnp.sum(x, axis=0)`` over a ``[K, P]`` array as a slow strided
    reduction (~350 ms at ``[40, 10⁶]``, one core), while the sum of the ``K`` rows
    fuses into one elementwise pass (~11 ms), and so does any elementwise
    expression it is applied to (``sum_leading(f * x)``). Beyond 64 rows, halves
    are added first so that a single fusion never takes more than 64 operands.
    """
    while x.shape[0] > 64:
        h = x.shape[0] // 2
        top = x[:h] + x[h : 2 * h]
        x = jnp.concatenate([top, x[2 * h :]]) if x.shape[0] % 2 else top
    total = x[0]
    for i in range(1, x.shape[0]):
        total = total + x[i]
    return total


def sum_tasks(jac: PyTree) -> PyTree:
    """``Σ_k J_k`` for every leaf (the gradient of the summed losses).

    Written as the contraction ``1ᵀ J`` rather than ``jnp.sum(J, axis=0)``: on XLA
    CPU the reduction over the leading axis of a ``[40, 10⁶]`` leaf took ~1.1 s
    against ~35 ms for the dot (benchmarks/README.md).
    """

    def one(x):
        return jnp.tensordot(jnp.ones(x.shape[0], x.dtype), x, axes=1)

    return jax.tree_util.tree_map(one, jac)
