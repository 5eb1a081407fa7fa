"""ExcessMTL: exponentiated-gradient task weights from AdaGrad-preconditioned excess risks.

He et al., ICML 2024, https://arxiv.org/abs/2402.02009. The risk estimate is
:func:`mtl_jax.weighting.excess_mtl_risks`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _task_tree, _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base
from mtl_jax.weighting import _excess_mtl
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["ExcessMTLState", "excess_mtl"]


class ExcessMTLState(NamedTuple):
    sq_sums: tuple  # per shared leaf, [K, *leaf.shape] float32: Σ_s g_s² (AdaGrad)
    logits: jax.Array  # [K] float32, log α up to a constant
    baseline: jax.Array  # [K] float32, E_k⁰ (valid once set)
    warmup_sum: jax.Array  # [K] float32, Σ E_k over the warm-up steps
    task_steps: jax.Array  # [K] int32, updates each task has taken part in
    weights: jax.Array  # [K] float32, weights applied at the last update


def excess_mtl(
    *,
    num_tasks: int | None = None,
    step_size: float = 1.0,
    warmup_steps: int = 0,
    shared: MaskSpec = None,
) -> _base.Balancer:
    """ExcessMTL: ``d = Σ_k α_k g_k``, ``α ← softmax(log α + η E / E⁰)``.

    ``E_k = Σ_i g_{k,i}² / sqrt(Σ_s g_{k,s,i}²)`` estimates task ``k``'s excess risk
    (its Taylor expansion with AdaGrad's diagonal Hessian estimate, eqs. 6–7 of
    the paper); the weights take one exponentiated-gradient step per update
    (eq. 9) and are then applied. ``E⁰`` is the baseline of the scale processing
    (Section 3.2): with ``warmup_steps=0`` (the authors' code, LibMTL, torchjd) the
    first update's ``E`` becomes ``E⁰`` and that first step uses the raw ``E``;
    with ``warmup_steps=W`` the weights stay uniform for ``W`` updates and ``E⁰``
    is the mean ``E`` over them (the paper's Appendix C.1 recommends 3 epochs).
    ``α_0`` is uniform (the paper; the authors' code starts from ones, which the
    softmax makes the same after the first step).

    The state holds one ``[K, ...]`` squared-gradient sum per shared leaf: ``K``
    times the shared parameters' memory.

    Scale: the weights are on the simplex (mean-gradient scale); ``E / E⁰`` is
    invariant to the gradients' scale after the first step.

    Modes: full-parameter only (the preconditioner is per parameter). An absent
    task gets weight 0 and its sums, logit, baseline and step count are left
    unchanged; the softmax is over the present tasks.

    Cost: Jacobian (the per-task gradients of the shared leaves).

    Args:
      num_tasks: ``K`` (required, keyword-only).
      step_size: ``η > 0`` of the exponentiated-gradient step (paper's ``η_α``).
      warmup_steps: ``W ≥ 0`` updates of uniform weights collecting ``E⁰``.
      shared: leaves to balance; the others receive the plain sum over tasks.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"jacobian"``; its ``init``
      needs ``params`` (the sums are shaped like the shared leaves).

    References:
      He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024,
      https://arxiv.org/abs/2402.02009
    """
    _validate.check_num_tasks(num_tasks, required=True)
    step_size = _validate.check_number("step_size", step_size, low=0.0, low_open=True)
    warmup_steps = _validate.check_int("warmup_steps", warmup_steps, low=0)
    k = num_tasks

    def init(params):
        if params is None:
            raise ValueError("excess_mtl's init needs params (its state is shaped like them)")
        leaves = jax.tree_util.tree_leaves(params)
        try:
            flags = jax.tree_util.tree_leaves(_task_tree.resolve_mask(shared, params))
        except ValueError as e:
            raise ValueError(f"shared=: {e}") from None
        sums = tuple(jnp.zeros((k, *jnp.shape(p)), jnp.float32) for p, m in zip(leaves, flags) if m)
        zeros = jnp.zeros((k,), jnp.float32)
        uniform = jnp.full((k,), 1.0 / k, jnp.float32)
        return ExcessMTLState(sums, zeros, zeros, zeros, jnp.zeros((k,), jnp.int32), uniform)

    def combine(leaves, losses, state, presence=None):
        del losses
        if len(leaves) != len(state.sq_sums) or any(
            x.shape != s.shape for x, s in zip(leaves, state.sq_sums)
        ):
            raise ValueError(
                "excess_mtl's state does not match the Jacobian it is given: init it with the "
                "params it balances (full-parameter mode only)"
            )
        present = as_presence(presence, k)
        e, sums = _excess_mtl.excess_mtl_risks(leaves, list(state.sq_sums))
        sums = tuple(_presence.keep_absent(n, o, present) for n, o in zip(sums, state.sq_sums))
        steps = state.task_steps
        in_warmup = steps < warmup_steps
        at_first = steps == warmup_steps
        warm_sum = state.warmup_sum + jnp.where(in_warmup & present, e, 0.0)
        if warmup_steps > 0:
            base_first = warm_sum / warmup_steps
            scaled_first = e / (base_first + 1e-7)
        else:
            base_first = e
            scaled_first = e
        baseline = jnp.where(at_first, base_first, state.baseline)
        scaled = jnp.where(at_first, scaled_first, e / (baseline + 1e-7))
        stepped = state.logits + step_size * scaled
        logits = jnp.where(present & ~in_warmup, stepped, state.logits)
        baseline = jnp.where(present, baseline, state.baseline)
        w = _presence.masked_softmax(logits, present)
        out = _task_tree.combine(w.astype(leaves[0].dtype), leaves)
        new = ExcessMTLState(
            sums,
            logits,
            baseline,
            jnp.where(present, warm_sum, state.warmup_sum),
            steps + present.astype(jnp.int32),
            w,
        )
        return out, new

    return _base.jacobian_balancer(init, combine, shared=shared, representation=False)
