"""Priority-Constrained Descent (PCD): follow the primary task, guarantee the others some progress.

Varam & AlHajri, "Not All Objectives Are Born Equal: Priority-Constrained Descent for
Hierarchical Multi-Objective Optimization", TMLR 2026,
https://openreview.net/forum?id=HT01yGHLEt, https://arxiv.org/abs/2606.29521
(torchjd's ``PCD``). Task 1 is the primary objective; tasks ``2..K`` are secondary.
With the normalised gradients ``g̃_i = s_i g_i``, ``s_i = 1/√(v̂_i + ε)`` and ``v̂_i``
the bias-corrected moving average (decay ``β``) of ``‖g_i‖²``, the direction is

    d̃ = argmin_d ½‖d − g̃_1‖²   subject to   g̃_jᵀd ≥ τ_j ‖g̃_j‖²,  j = 2..K,

and the update is ``d = (‖g_1‖ / ‖d̃‖) d̃``: the primary gradient, bent just enough that
every secondary task gets at least the fraction ``τ_j`` of the first-order progress
a step along its own normalised gradient would give.

In Gram space. The Lagrangian's stationarity gives ``d̃ = g̃_1 + Σ_j μ_j g̃_j`` with
multipliers ``μ ≥ 0`` that solve the dual

    min_{μ ≥ 0} ½ μᵀ G̃_S μ − bᵀμ,   b_j = τ_j G̃_jj − G̃_j1,

where ``G̃ = diag(s) G diag(s)`` and ``G̃_S`` is its block on the secondary tasks; the
KKT conditions are ``μ ≥ 0``, slack ``σ = G̃_S μ − b ≥ 0`` (``σ_j = g̃_jᵀd̃ − τ_j‖g̃_j‖²``)
and ``μ ∘ σ = 0``. That dual is a box QP with a linear term, solved by
:func:`mtl_jax.weighting.box_qp` (first-order iterations, then an exact active-set
polish). The task weights are ``w = (‖g_1‖/‖d̃‖) s ∘ (e_1 + μ)`` with
``‖d̃‖² = (e_1 + μ)ᵀ G̃ (e_1 + μ)``.

Infeasible constraints. When no ``d`` meets every constraint (e.g. two opposite
secondary gradients with ``τ > 0``), the dual is unbounded below. The returned ``μ``
is then checked: the constraints count as met when every slack is at least
``−feas_tol · ‖g̃_j‖ max_i ‖g̃_i‖`` and the rounding error of the slack (``ε_mach``
times ``Σ_i |G̃_ji| μ_i``) is below that same bound; otherwise the constraints are
dropped and the update is ``g_1``. The second test also treats as infeasible a
problem that is feasible only with multipliers too large for the working
precision (``μ`` of order ``feas_tol/ε_mach``, ~10³ in float32). torchjd solves
the QP in float64 with the dual active-set method of Goldfarb & Idnani and calls
the problem infeasible when a violated constraint's gradient is (to a relative
``1e-9``) a combination of the active ones.

Task presence. An absent task is left out of the problem (its weight is 0 and
its moving average and step count do not move); the step on ``K`` tasks with the
subset ``S`` present is the step of PCD on the tasks of ``S`` alone, in their
order. So when the primary task is absent, the first present task leads and the
other present tasks are its secondaries (the leader's own ``τ`` is unused).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.weighting._gram import (
    all_present,
    as_gram,
    check_presence,
    nan_unless_finite,
    restrict_gram,
)
from mtl_jax.weighting._qp import box_qp, check_solver_args

__all__ = ["check_pcd_tau", "pcd_norms_update", "pcd_scales", "pcd_weights"]


def check_pcd_tau(tau: jax.typing.ArrayLike, num_tasks: int | None = None) -> np.ndarray | float:
    """Validates PCD's ``τ``: a float in ``[0, 1]`` or a vector of them, one per secondary task.

    Args:
      tau: a real number, or a 1-D array (concrete) of length ``K − 1``.
      num_tasks: ``K``; if given, a vector ``τ`` must have ``K − 1`` entries.

    Returns:
      ``float(tau)``, or the vector as a float64 NumPy array.

    Raises:
      ValueError: naming ``tau`` and its value, if it is not in ``[0, 1]`` (or not
        finite), not 0- or 1-dimensional, or of the wrong length.
    """
    if isinstance(tau, bool):
        raise ValueError(f"tau must be a real number in [0, 1] or a vector of them, got {tau!r}")
    if isinstance(tau, int | float | np.integer | np.floating):
        t = float(tau)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau!r}")
        return t
    if isinstance(tau, jax.core.Tracer):
        raise ValueError("tau must be concrete (a float or a vector known at trace time)")
    v = np.asarray(tau)
    if v.dtype.kind not in "iuf":
        raise ValueError(f"tau must be a real number in [0, 1] or a vector of them, got {tau!r}")
    v = v.astype(np.float64)
    if v.ndim == 0:
        return check_pcd_tau(float(v), num_tasks)
    if v.ndim != 1:
        raise ValueError(f"tau must be a float or a 1-D vector, got shape {v.shape}")
    if not np.all((v >= 0.0) & (v <= 1.0)):
        raise ValueError(f"tau must have every entry in [0, 1], got {v.tolist()}")
    if num_tasks is not None and v.shape[0] != num_tasks - 1:
        raise ValueError(
            f"tau must have one entry per secondary task ({num_tasks - 1} for "
            f"num_tasks={num_tasks}), got {v.shape[0]}: {v.tolist()}"
        )
    return v


def pcd_norms_update(
    sq_norm_ema: jax.typing.ArrayLike,
    task_steps: jax.typing.ArrayLike,
    gram: jax.typing.ArrayLike,
    *,
    beta: float = 0.999,
    presence: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One step of PCD's moving average of the squared gradient norms.

    ``v_i ← β v_i + (1 − β) G_ii`` and ``n_i ← n_i + 1`` for the present tasks; the
    absent tasks keep ``v_i`` and ``n_i``.

    Args:
      sq_norm_ema: ``[K]`` moving averages ``v`` (0 before the first step).
      task_steps: ``[K]`` int, the number of steps each task has taken part in.
      gram: ``[K, K]`` Gram matrix; only its diagonal ``‖g_i‖²`` is read.
      beta: decay ``β ∈ [0, 1)``.
      presence: ``[K]`` bool, which tasks have data (``None``: all).

    Returns:
      ``(sq_norm_ema, task_steps)`` after the step.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    g = as_gram(gram, symmetrize=False)
    k = g.shape[0]
    p = all_present(check_presence(presence, k), k)
    v = jnp.asarray(sq_norm_ema)
    n = jnp.asarray(task_steps)
    sq = jnp.diagonal(g).astype(v.dtype)
    new_v = jnp.where(p, beta * v + (1.0 - beta) * sq, v)
    return new_v, n + p.astype(n.dtype)


def pcd_scales(
    sq_norm_ema: jax.typing.ArrayLike,
    task_steps: jax.typing.ArrayLike,
    *,
    beta: float = 0.999,
    eps: float = 1e-8,
) -> jax.Array:
    """PCD's normalising scales ``s_i = 1/√(v̂_i + ε)``, ``v̂_i = v_i / (1 − β^{n_i})``.

    A task whose denominator is 0 (it has taken part in no step, or its gradient
    was always 0 and ``ε = 0``) gets ``s_i = 0``; its scale does not matter then.

    Args:
      sq_norm_ema: ``[K]`` moving averages ``v`` of ``‖g_i‖²``.
      task_steps: ``[K]`` step counts ``n_i``.
      beta: decay ``β ∈ [0, 1)``.
      eps: ``ε ≥ 0``.

    Returns:
      ``[K]`` scales (all NaN if ``sq_norm_ema`` has a non-finite entry).
    """
    v = jnp.asarray(sq_norm_ema)
    v = v.astype(jnp.promote_types(v.dtype, jnp.float32))
    n = jnp.asarray(task_steps).astype(v.dtype)
    correction = 1.0 - jnp.asarray(beta, v.dtype) ** n
    v_hat = v / jnp.where(correction > 0.0, correction, 1.0)
    den = jnp.sqrt(jnp.where(correction > 0.0, v_hat, 0.0) + eps)
    s = jnp.where(den > 0.0, 1.0 / jnp.where(den > 0.0, den, 1.0), 0.0)
    return nan_unless_finite(s, v)  # an infinite average is a corrupt state, not scale 0


def pcd_weights(
    gram: jax.typing.ArrayLike,
    scales: jax.typing.ArrayLike | None = None,
    *,
    tau: jax.typing.ArrayLike = 0.02,
    presence: jax.typing.ArrayLike | None = None,
    feas_tol: float = 1e-4,
    num_iters: int = 1000,
    tol: float = 1e-6,
    polish_iters: int = 20,
) -> jax.Array:
    """PCD's task weights ``w``: the update is ``d = Σ_i w_i g_i`` (task 1 is the primary).

    ``d̃ = argmin_d ½‖d − g̃_1‖²`` s.t. ``g̃_jᵀd ≥ τ_j‖g̃_j‖²`` (``j ≥ 2``), with
    ``g̃_i = s_i g_i``, rescaled to ``‖d‖ = ‖g_1‖`` (see the module docstring for the
    dual QP that is solved and the tolerances). Special cases: ``g_1 = 0`` gives
    ``w = 0``; infeasible constraints give ``w = e_1`` (the update ``g_1``); a zero
    ``d̃`` (to the Gram matrix's precision) gives ``w = 0``.

    Args:
      gram: ``[K, K]`` Gram matrix ``G = J Jᵀ`` of the task gradients.
      scales: ``[K]`` scales ``s`` (:func:`pcd_scales`); ``None``: ``s_i = 1/‖g_i‖``
        (the first step of the moving average with ``ε = 0``; 0 for a zero gradient).
      tau: ``τ ∈ [0, 1]``, a float or a ``[K − 1]`` vector (one per secondary task);
        a concrete value out of range raises, a traced one gives NaN weights.
      presence: ``[K]`` bool; absent tasks get weight 0 and are left out, and the
        first present task is the primary.
      feas_tol: relative tolerance of the feasibility check (module docstring).
      num_iters: cap on :func:`box_qp`'s first-order iterations.
      tol: :func:`box_qp`'s stopping tolerance.
      polish_iters: cap on :func:`box_qp`'s active-set steps.

    Returns:
      ``[K]`` weights, 0 on the absent tasks (all 0 when none is present); all NaN
      if ``G`` (on the present tasks) or ``scales`` has a non-finite entry.

    Example:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import pcd_weights
      >>> g = jnp.array([[1.0, -0.5], [-0.5, 1.0]])  # g_2 conflicts with g_1
      >>> w = pcd_weights(g, tau=0.0)  # d ⊥ g_2: g_1 minus its projection on g_2
      >>> [round(float(x), 4) for x in w]
      [1.1547, 0.5774]
    """
    check_solver_args(num_iters, tol, polish_iters)
    if isinstance(feas_tol, bool) or not (
        isinstance(feas_tol, int | float) and 0.0 < feas_tol < float("inf")
    ):
        raise ValueError(f"feas_tol must be a positive float, got {feas_tol!r}")
    g = as_gram(gram)
    k = g.shape[0]
    if isinstance(tau, jax.core.Tracer):  # taken as given; out of [0, 1] gives NaN weights
        t = jnp.asarray(tau, g.dtype)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != k - 1):
            raise ValueError(f"tau must be a float or a [{k - 1}] vector, got shape {t.shape}")
        tau_ok = jnp.all((t >= 0.0) & (t <= 1.0))
    else:
        t = check_pcd_tau(tau, k)
        tau_ok = True
    p = all_present(check_presence(presence, k), k)
    g = restrict_gram(g, p)
    diag = jnp.diagonal(g)
    if scales is None:
        s = jnp.where(diag > 0.0, 1.0 / jnp.sqrt(jnp.where(diag > 0.0, diag, 1.0)), 0.0)
    else:
        s = jnp.asarray(scales, g.dtype)
        if s.shape != (k,):
            raise ValueError(f"scales must have shape ({k},), got {s.shape}")
    s = jnp.where(p, s, 0.0)
    taus = jnp.concatenate(
        [jnp.zeros((1,), g.dtype), jnp.broadcast_to(jnp.asarray(t, g.dtype), (k - 1,))]
    )

    lead = jnp.argmax(p)  # the first present task (0 when none is)
    e = (jnp.arange(k) == lead).astype(g.dtype)
    secondary = p & (e == 0.0)
    gt = g * s[:, None] * s[None, :]
    dt = jnp.diagonal(gt)
    col = gt @ e  # G̃_j1
    b = jnp.where(secondary, taus * dt - col, 0.0)
    mu = box_qp(
        gt,
        jnp.zeros((k,), g.dtype),
        lin=-b,
        num_iters=num_iters,
        tol=tol,
        polish_iters=polish_iters,
        presence=secondary,
    )
    mu = jnp.where(secondary, jnp.maximum(mu, 0.0), 0.0)

    # Feasibility of the dual's answer: every slack met, and measurably so.
    norms = jnp.sqrt(jnp.maximum(dt, 0.0))
    bound = feas_tol * norms * jnp.max(norms)
    slack = gt @ mu - b
    rounding = jnp.finfo(g.dtype).eps * (jnp.abs(gt) @ mu + jnp.abs(col) + taus * dt)
    met = (slack >= -bound) & (rounding <= bound)
    feasible = jnp.all(jnp.where(secondary & (dt > 0.0), met, True))
    v = e + jnp.where(feasible, mu, 0.0)

    # Rescale d̃ = Σ_i v_i g̃_i to ‖g_1‖, unless d̃ (or g_1) is zero up to rounding.
    sq = v @ gt @ v
    magnitude = (jnp.abs(v) @ norms) ** 2
    lead_sq = jnp.sum(e * diag)
    nonzero = (sq > 10.0 * jnp.finfo(g.dtype).eps * magnitude) & (lead_sq > 0.0)
    ratio = jnp.sqrt(lead_sq / jnp.where(nonzero, sq, 1.0))
    w = jnp.where(nonzero & p, v * s * ratio, 0.0)
    w = jnp.where(tau_ok, w, jnp.nan)
    return nan_unless_finite(w, g, s)
