"""GradNorm: learn task weights that equalise the tasks' gradient norms and rates.

Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018, https://arxiv.org/abs/1711.02257.
The weight objective and its gradient are in :mod:`mtl_jax.weighting`
(``gradnorm_*``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _presence, _task_tree, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _gradnorm

__all__ = ["GradNormState", "gradnorm"]


class GradNormState(NamedTuple):
    weights: jax.Array  # [K] float32, the weights w applied at the last update (ones before)
    next_weights: jax.Array  # [K] float32, the weights the next update applies (Σw = K)
    initial_losses: jax.Array  # [K] float32, L_i(0), recorded when task i is first present
    count: jax.Array  # [] int32, number of updates so far
    inner_state: Any  # state of the optimiser of w
    seen: jax.Array  # [K] bool, whether task i has been present (L_i(0) is recorded)


def _default_layer(shared_flags: list[bool], shapes: list[tuple]) -> list[bool]:
    """The last shared leaf with ≥ 2 dimensions (else the last shared leaf)."""
    idx = [i for i, m in enumerate(shared_flags) if m]
    if not idx:
        return [False] * len(shared_flags)
    matrices = [i for i in idx if len(shapes[i]) >= 2]
    chosen = (matrices or idx)[-1]
    return [i == chosen for i in range(len(shared_flags))]


def _layer_mask(shared: MaskSpec, layer: MaskSpec) -> _task_tree.TreeMask:
    """GradNorm's ``W`` as a mask rule on the params tree: ``layer`` ∧ shared, or the default."""

    def select(tree):
        treedef = jax.tree_util.tree_structure(tree)
        shared_flags = jax.tree_util.tree_leaves(_task_tree.resolve_mask(shared, tree))
        if layer is None:
            shapes = [tuple(jnp.shape(x)) for x in jax.tree_util.tree_leaves(tree)]
            flags = _default_layer(shared_flags, shapes)
        else:
            layer_flags = jax.tree_util.tree_leaves(_task_tree.resolve_mask(layer, tree))
            flags = [a and b for a, b in zip(shared_flags, layer_flags)]
            if not any(flags):
                raise ValueError("layer= selects no shared leaf")
        return jax.tree_util.tree_unflatten(treedef, flags)

    return _task_tree.TreeMask(select)


def gradnorm(
    *,
    num_tasks: int | None = None,
    alpha: float = 1.5,
    learning_rate: float = 0.025,
    layer: MaskSpec = None,
    optimizer: optax.GradientTransformation | None = None,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """GradNorm: weights trained so that ``w_i ‖∇_W L_i‖ ≈ Ḡ r_i^α``.

    Each update returns ``Σ_k w_k ∇L_k`` with the current weights ``w``; then it
    records ``L_i(0)`` (first update only), computes ``n_i = ‖∇_W L_i‖`` on the layer
    ``W``, takes one optimiser step on ``w`` with the closed-form gradient of
    ``L_grad = Σ_i |w_i n_i − Ḡ r_i^α|`` (target held constant, see
    :func:`mtl_jax.weighting.gradnorm_weights_grad`), and renormalises to
    ``Σ w = K`` (Algorithm 1 of the paper). Negative weights are clipped to 0
    before renormalising (the paper is silent; a negative weight would ascend a
    task's loss), and ``w`` falls back to ones if it sums to 0.

    The layer ``W``: by default the *last shared layer's weights*, taken as the
    last shared leaf, in tree-flattening order, with at least two dimensions (a
    Dense or Conv ``kernel``; biases and norm scales are skipped; if no leaf has
    two dimensions, the last shared leaf). Flax sorts dict keys, so ``Dense_10``
    precedes ``Dense_2``: with ten or more layers, or any other layout, pass
    ``layer=`` explicitly (a pytree of bools or ``fn(path, leaf) -> bool``).

    Presence: an absent task gets weight 0 and its state (``L_i(0)``, its next
    weight, its optimiser moments) is left unchanged; ``L_i(0)`` is recorded at
    the first update in which task ``i`` is present. The means of the weight
    objective run over the present tasks, and their new weights are renormalised
    to sum to the number of present tasks (the paper's ``Σ w = K`` over the tasks
    in play).

    Scale: ``Σ w = K``, so at ``w = 1`` the update is :func:`equal_weighting`'s.

    Modes: full-parameter (norms on ``W``) and representation mode (norms of
    the gradients w.r.t. the shared representation, as LibMTL does).
    ``state.weights`` (and :func:`~mtl_jax.balancers.task_weights`) hold the
    weights the last update applied; ``state.next_weights`` those of the next.

    Cost: Gram (the K×K Gram matrix of the task gradients).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      alpha: the asymmetry ``α ≥ 0`` (paper: 0.12 on the toy, 1.5 on NYUv2).
      learning_rate: Adam learning rate of ``w`` (ignored if ``optimizer`` given).
      layer: which shared leaves make ``W`` (see above); ``None``: the default rule.
      optimizer: the optax optimiser of ``w``; default ``optax.adam(learning_rate)``.
      shared: leaves to weight; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"gram"`` whose
      ``spec.gram_mask`` is a :class:`~mtl_jax._task_tree.TreeMask` selecting ``W``
      (``layer`` among the shared leaves, or the default rule).

    References:
      Chen et al. 2018, https://arxiv.org/abs/1711.02257
    """
    _validate.check_num_tasks(num_tasks, required=True)
    alpha = _validate.check_number("alpha", alpha, low=0.0)
    optimizer = _state.inner_optimizer(optimizer, learning_rate)

    def init(params):
        del params
        w = jnp.ones((num_tasks,), jnp.float32)
        seen = jnp.zeros((num_tasks,), bool)
        return GradNormState(w, w, w, jnp.zeros((), jnp.int32), optimizer.init(w), seen)

    def weights_fn(gram, losses, state, presence=None):
        _validate.check_num_tasks(num_tasks, got=gram.shape[0], source="the task Jacobian")
        w = state.next_weights
        losses = losses.astype(w.dtype)
        present = jnp.ones((num_tasks,), bool) if presence is None else presence
        l0 = jnp.where(present & ~state.seen, losses, state.initial_losses)
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0)).astype(w.dtype)
        grad = _gradnorm.gradnorm_weights_grad(w, norms, losses, l0, alpha=alpha, presence=presence)
        step, inner = optimizer.update(grad, state.inner_state, w)
        w_new = jnp.maximum(optax.apply_updates(w, step), 0.0)
        if presence is None:
            total = jnp.sum(w_new)
            ok = total > jnp.finfo(w.dtype).tiny
            w_new = jnp.where(ok, num_tasks * w_new / jnp.where(ok, total, 1.0), 1.0)
        else:
            w_new = _presence.zero_absent(w_new, presence)
            total = jnp.sum(w_new)
            ok = total > jnp.finfo(w.dtype).tiny
            scale = _presence.num_present(presence, num_tasks, w.dtype)
            w_new = jnp.where(ok, scale * w_new / jnp.where(ok, total, 1.0), 1.0)
            w_new = _presence.keep_absent(w_new, w, presence)
            inner = _presence.keep_absent_tree(inner, state.inner_state, presence, num_tasks)
            w = _presence.zero_absent(w, presence)
        seen = state.seen | present
        return w, GradNormState(w, w_new, l0, state.count + 1, inner, seen)

    # In representation mode the norms are taken w.r.t. the whole representation
    # (as LibMTL does); on parameters, on W.
    # The weights read only diag(G) on W: the Gramian route forms just the per-task
    # norms of W's gradient, and XLA prunes each per-task backward pass below W
    # (training._gramian.diagonal_only).
    return _base.gram_balancer(
        init,
        weights_fn,
        shared=shared,
        gram_mask=_layer_mask(shared, layer),
        diagonal_only=True,
    )
