"""Explicit inductive bias toward the pretrained starting point (the L2-SP family).

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML 2018, https://arxiv.org/abs/1802.01483.

Each regulariser is an optax transform that *adds the gradient of its penalty* to
the incoming updates (like ``optax.add_decayed_weights``), so it goes first in a
chain: ``optax.chain(l2_sp(anchor), optax.sgd(lr))``. Parameters are split into the
pretrained leaves ``S`` (they have a starting point ``w⁰`` in ``anchor``) and the new
leaves ``S̄`` (e.g. a re-initialised head), selected by ``pretrained``:

* ``l2``:              Ω(w) = α/2 ‖w‖²                                (all leaves)
* ``l2_sp``:           Ω(w) = α/2 ‖w_S − w⁰_S‖² + β/2 ‖w_S̄‖²
* ``l2_sp_fisher``:    Ω(w) = α/2 Σ_j F̂_j (w_j − w⁰_j)² + β/2 ‖w_S̄‖²
* ``l1_sp``:           Ω(w) = α Σ_j |w_j − w⁰_j| + β/2 ‖w_S̄‖²
* ``group_lasso_sp``:  Ω(w) = α Σ_g s_g ‖w_g − w⁰_g‖₂ + β/2 ‖w_S̄‖²
* ``group_lasso_sp_fisher``: Ω(w) = α Σ_g s_g (Σ_{j∈g} F̂_j (w_j − w⁰_j)²)^{1/2} + β/2 ‖w_S̄‖²

Groups: one group per *output channel*, i.e. per index of the last axis of a leaf
with two or more dimensions (Dense kernel ``[in, out]``, Conv kernel
``[h, w, in, out]``), with ``s_g = sqrt(group size) = sqrt(prod(shape[:-1]))``.
Leaves with fewer than two dimensions (biases, scales) are split into groups of
size one, so each bias entry gets α|b − b⁰| (its channel's own group restricted to
the bias leaf); this is our choice, the paper does not single biases out.
The subgradient used at a kink (``w_g = w⁰_g``) is zero.

The anchor (and the Fisher diagonal) live in the transform's state, so they are
traced inputs of a jitted step rather than constants baked into the program.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax.transfer._masks import LeafSelector, resolve_selector

__all__ = [
    "SPState",
    "group_lasso_sp",
    "group_lasso_sp_fisher",
    "l1_sp",
    "l2",
    "l2_sp",
    "l2_sp_fisher",
]


class SPState(NamedTuple):
    """State of the starting-point regularisers."""

    anchor: Any  # pytree like params: the pretrained starting point w⁰
    fisher: Any  # pytree like params (Fisher diagonal F̂), or None


def _check_nonneg(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _safe_unit(num: jax.Array, norm: jax.Array) -> jax.Array:
    """``num / norm`` where ``norm > 0`` and 0 elsewhere (a valid subgradient)."""
    positive = norm > 0
    return jnp.where(positive, num / jnp.where(positive, norm, jnp.ones_like(norm)), 0.0)


def _l2_grad(d: jax.Array, f: jax.Array | None) -> jax.Array:
    return d if f is None else f * d


def _l1_grad(d: jax.Array, f: jax.Array | None) -> jax.Array:
    del f
    return jnp.sign(d)


def _group_grad(d: jax.Array, f: jax.Array | None) -> jax.Array:
    fd = d if f is None else f * d
    if d.ndim < 2:  # groups of size one: s_g = 1, ‖·‖ = sqrt(f)|d|
        return _safe_unit(fd, jnp.sqrt(d * fd))
    axes = tuple(range(d.ndim - 1))
    norm = jnp.sqrt(jnp.sum(d * fd, axis=axes, keepdims=True))
    scale = math.sqrt(math.prod(d.shape[:-1]))
    return scale * _safe_unit(fd, norm)


def _check_leaf_shapes(params: Any, anchor: Any, fisher: Any, mask: Any) -> None:
    """Names the first pretrained leaf whose shape differs from its anchor (or Fisher).

    Shapes are static, so this check also runs at trace time under ``jax.jit``.
    """
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_a = jax.tree.leaves(anchor)
    flat_m = jax.tree.leaves(mask)
    flat_f = jax.tree.leaves(fisher) if fisher is not None else [None] * len(flat_a)
    if not len(flat_p) == len(flat_a) == len(flat_m):
        return  # structure mismatches are reported by the callers
    for (path, w), w0, is_pre, f in zip(flat_p, flat_a, flat_m, flat_f):
        if not is_pre:
            continue
        where = jax.tree_util.keystr(path)
        for what, other in (("anchor", w0), ("fisher", f)):
            if other is not None and jnp.shape(other) != jnp.shape(w):
                raise ValueError(
                    f"leaf {where} has shape {tuple(jnp.shape(w))} in params but "
                    f"{tuple(jnp.shape(other))} in {what}; if it is a new or re-sized "
                    "layer (e.g. a classifier head for new classes), exclude it from the "
                    "starting point with pretrained= (a pytree of bools, or a callable "
                    f"(path, leaf) -> bool returning False for {where})"
                )


def _starting_point(
    leaf_grad: Callable[[jax.Array, jax.Array | None], jax.Array],
    anchor: Any,
    fisher: Any,
    alpha: float,
    beta: float,
    pretrained: LeafSelector,
) -> optax.GradientTransformation:
    """Shared routing: ``alpha * leaf_grad(w - w0)`` on S, ``beta * w`` on S̄."""
    mask = resolve_selector(pretrained, anchor, name="pretrained")
    anchor = jax.tree.map(jnp.asarray, anchor)
    if fisher is not None:
        if jax.tree.structure(fisher) != jax.tree.structure(anchor):
            raise ValueError("fisher must have the structure of anchor")
        fisher = jax.tree.map(jnp.asarray, fisher)

    def init_fn(params: Any) -> SPState:
        if jax.tree.structure(params) != jax.tree.structure(anchor):
            raise ValueError(
                f"params structure {jax.tree.structure(params)} differs from anchor "
                f"structure {jax.tree.structure(anchor)}"
            )
        _check_leaf_shapes(params, anchor, fisher, mask)
        return SPState(anchor=anchor, fisher=fisher)

    def update_fn(updates: Any, state: SPState, params: Any = None) -> tuple[Any, SPState]:
        if params is None:
            raise ValueError("starting-point regularisers need params in update()")
        _check_leaf_shapes(params, state.anchor, state.fisher, mask)
        fish = state.fisher if state.fisher is not None else jax.tree.map(lambda _: None, mask)

        def leaf(is_pre, u, w, w0, f):
            if is_pre:
                g = alpha * leaf_grad(w - w0, f)
            else:
                g = beta * w
            return (u + g.astype(u.dtype)).astype(u.dtype)

        new = jax.tree.map(
            leaf, mask, updates, params, state.anchor, fish, is_leaf=lambda x: x is None
        )
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


def l2(*, alpha: float = 0.1) -> optax.GradientTransformation:
    """Plain weight decay Ω(w) = α/2 ‖w‖² (the "L2" baseline of L2-SP).

    Adds ``α w`` to the updates for every leaf.

    Args:
      alpha: penalty strength α ≥ 0.

    Returns:
      An ``optax.GradientTransformation``; ``update`` requires ``params``.

    References:
      Li et al., 2018, https://arxiv.org/abs/1802.01483
    """
    alpha = _check_nonneg("alpha", alpha)

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        if params is None:
            raise ValueError("l2 needs params in update()")
        return jax.tree.map(lambda u, w: u + (alpha * w).astype(u.dtype), updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def l2_sp(
    anchor: Any,
    *,
    alpha: float = 0.1,
    beta: float = 0.01,
    pretrained: LeafSelector = None,
) -> optax.GradientTransformation:
    """L2-SP: pull pretrained weights toward their starting point.

    Ω(w) = α/2 ‖w_S − w⁰_S‖² + β/2 ‖w_S̄‖²; adds ``α (w − w⁰)`` on pretrained leaves
    and ``β w`` on the others.

    Args:
      anchor: the pretrained parameters w⁰ (same structure as the trained params).
      alpha: strength α ≥ 0 of the pull toward w⁰ (paper default 0.1).
      beta: weight decay β ≥ 0 on the new leaves S̄ (paper default 0.01).
      pretrained: which leaves come from the pretrained model: ``None`` (all), a
        pytree of bools, or a callable ``(path, leaf) -> bool``.

    Returns:
      An ``optax.GradientTransformation``; ``update`` requires ``params``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> w0 = {"w": jnp.ones(2)}
      >>> tx = optax.chain(l2_sp(w0, alpha=1.0), optax.sgd(0.5))
      >>> w = {"w": jnp.zeros(2)}
      >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, w), tx.init(w), w)
      >>> optax.apply_updates(w, u)["w"].tolist()
      [0.5, 0.5]

    References:
      Li et al., 2018, https://arxiv.org/abs/1802.01483
    """
    alpha, beta = _check_nonneg("alpha", alpha), _check_nonneg("beta", beta)
    return _starting_point(_l2_grad, anchor, None, alpha, beta, pretrained)


def l2_sp_fisher(
    anchor: Any,
    fisher: Any,
    *,
    alpha: float = 0.1,
    beta: float = 0.01,
    pretrained: LeafSelector = None,
) -> optax.GradientTransformation:
    """L2-SP-Fisher: L2-SP weighted by the diagonal Fisher information at w⁰.

    Ω(w) = α/2 Σ_j F̂_j (w_j − w⁰_j)² + β/2 ‖w_S̄‖² (the EWC penalty); adds
    ``α F̂ (w − w⁰)`` on pretrained leaves and ``β w`` on the others.

    Args:
      anchor: the pretrained parameters w⁰.
      fisher: the diagonal Fisher F̂, a pytree like ``anchor`` (see ``fisher_diagonal``);
        its entries on non-pretrained leaves are ignored.
      alpha: strength α ≥ 0.
      beta: weight decay β ≥ 0 on the new leaves.
      pretrained: pretrained-leaf selector (see ``l2_sp``).

    Returns:
      An ``optax.GradientTransformation``; ``update`` requires ``params``.

    References:
      Li et al., 2018, https://arxiv.org/abs/1802.01483
    """
    alpha, beta = _check_nonneg("alpha", alpha), _check_nonneg("beta", beta)
    return _starting_point(_l2_grad, anchor, fisher, alpha, beta, pretrained)


def l1_sp(
    anchor: Any,
    *,
    alpha: float = 0.1,
    beta: float = 0.01,
    pretrained: LeafSelector = None,
) -> optax.GradientTransformation:
    """L1-SP: ``Ω(w) = α Σ_j |w_j − w⁰_j| + β/2 ‖w_S̄‖²``.

    Adds the subgradient ``α sign(w − w⁰)`` (0 at the kink) on pretrained leaves and
    ``β w`` on the others.

    Args:
      anchor: the pretrained parameters w⁰.
      alpha: strength α ≥ 0.
      beta: weight decay β ≥ 0 on the new leaves.
      pretrained: pretrained-leaf selector (see ``l2_sp``).

    Returns:
      An ``optax.GradientTransformation``; ``update`` requires ``params``.

    References:
      Li et al., 2018, https://arxiv.org/abs/1802.01483
    """
    alpha, beta = _check_nonneg("alpha", alpha), _check_nonneg("beta", beta)
    return _starting_point(_l1_grad, anchor, None, alpha, beta, pretrained)


def group_lasso_sp(
    anchor: Any,
    *,
    alpha: float = 0.1,
    beta: float = 0.01,
    pretrained: LeafSelector = None,
) -> optax.GradientTransformation:
    """GL-SP: group lasso toward w⁰, one group per output channel.

    Ω(w) = α Σ_g s_g ‖w_g − w⁰_g‖₂ + β/2 ‖w_S̄‖², ``s_g = sqrt(|g|)``; adds
    ``α s_g (w_g − w⁰_g) / ‖w_g − w⁰_g‖₂`` (0 when the group sits at w⁰).
    See the module docstring for how groups and biases are defined.

    Args:
      anchor: the pretrained parameters w⁰.
      alpha: strength α ≥ 0.
      beta: weight decay β ≥ 0 on the new leaves.
      pretrained: pretrained-leaf selector (see ``l2_sp``).

    Returns:
      An ``optax.GradientTransformation``; ``update`` requires ``params``.

    References:
      Li et al., 2018, https://arxiv.org/abs/1802.01483
    """
    alpha, beta = _check_nonneg("alpha", alpha), _check_nonneg("beta", beta)
    return _starting_point(_group_grad, anchor, None, alpha, beta, pretrained)


def group_lasso_sp_fisher(
    anchor: Any,
    fisher: Any,
    *,
    alpha: float = 0.1,
    beta: float = 0.01,
    pretrained: LeafSelector = None,
) -> optax.GradientTransformation:
    """GL-SP-Fisher: group lasso in the Fisher metric, one group per output channel.

    Ω(w) = α Σ_g s_g (Σ_{j∈g} F̂_j (w_j − w⁰_j)²)^{1/2} + β/2 ‖w_S̄‖²; adds
    ``α s_g F̂_g (w_g − w⁰_g) / ‖w_g − w⁰_g‖_F̂``.

    Args:
      anchor: the pretrained parameters w⁰.
      fisher: the diagonal Fisher F̂, a pytree like ``anchor``.
      alpha: strength α ≥ 0.
      beta: weight decay β ≥ 0 on the new leaves.
      pretrained: pretrained-leaf selector (see ``l2_sp``).

    Returns:
      An ``optax.GradientTransformation``; ``update`` requires ``params``.

    References:
      Li et al., 2018, https://arxiv.org/abs/1802.01483
    """
    alpha, beta = _check_nonneg("alpha", alpha), _check_nonneg("beta", beta)
    return _starting_point(_group_grad, anchor, fisher, alpha, beta, pretrained)
