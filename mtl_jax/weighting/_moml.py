"""MOML: the task-weight logits descend the MGDA direction of the tasks' hypergradients.

Ye, Lin, Yue, Guo, Xiao & Zhang, "Multi-Objective Meta Learning", NeurIPS 2021,
https://arxiv.org/abs/2102.07121. The pure parts of one meta-update: the
hypergradients of the ``K`` upper-level (validation) losses with respect to the
weight logits after one look-ahead step (closed form, from a cross Gram matrix), and
their MGDA combination.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _presence, _validate
from mtl_jax.weighting._gram import nan_unless_finite
from mtl_jax.weighting._mgda import Normalization, mgda_weights
from mtl_jax.weighting._presence_mask import as_presence

__all__ = ["moml_direction", "moml_hypergradients"]


def _square(name: str, x: jax.typing.ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"{name} must be a square [K, K] matrix, got shape {x.shape}")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def moml_hypergradients(
    cross_gram: jax.typing.ArrayLike,
    logits: jax.typing.ArrayLike,
    *,
    inner_lr: float,
    presence: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """The hypergradients ``∂F_i/∂α`` of MOML's one-step look-ahead, in closed form.

    With training task losses ``L_j``, weights ``s = softmax(α)`` (over the present
    tasks) and the look-ahead ``ω' = ω − η Σ_j s_j ∇L_j(ω)``, the validation loss
    ``F_i(ω')`` of task ``i`` moves with the logits as

    .. math::
        \\frac{∂F_i}{∂α} = −η\\, C_{i·}\\, J_s, \\qquad
        C_{ij} = ⟨∇F_i(ω'), ∇L_j(ω)⟩, \\qquad J_s = \\mathrm{diag}(s) − s sᵀ,

    exact for one step (``∇L_j(ω)`` does not depend on ``α``, so no second
    derivative appears).

    Args:
      cross_gram: ``[K, K]`` ``C``: row ``i`` the validation gradient of task ``i``
        at the look-ahead parameters, column ``j`` the training gradient of task ``j``
        at the current ones.
      logits: ``[K]`` ``α``.
      inner_lr: ``η > 0``, the look-ahead step size.
      presence: ``[K]`` bool, the tasks present in the training batch; an absent
        task takes no part in ``s`` and its column of ``J_s`` is 0.

    Returns:
      ``[K, K]`` ``H`` with ``H[i, k] = ∂F_i/∂α_k`` (NaN if ``C`` or ``α`` is not finite).

    Raises:
      ValueError: ``cross_gram`` is not square, ``logits`` is not ``[K]``, or a bad
        ``inner_lr`` or ``presence``.
    References:
      Ye, Lin, Yue, Guo, Xiao & Zhang, "Multi-Objective Meta Learning", NeurIPS 2021,
      https://arxiv.org/abs/2102.07121
    """
    c = _square("cross_gram", cross_gram)
    k = c.shape[0]
    a = jnp.asarray(logits)
    if a.shape != (k,):
        raise ValueError(f"logits must have shape ({k},), got {a.shape}")
    _validate.check_positive("inner_lr", inner_lr)
    present = as_presence(presence, k)
    a = a.astype(c.dtype)
    s = _presence.masked_softmax(a, present)
    jac_s = jnp.diag(s) - jnp.outer(s, s)
    cols = jnp.where(present[None, :] & present[:, None], jac_s, 0.0)
    c = jnp.where(present[None, :], c, 0.0)  # an absent task's training gradient is out
    return nan_unless_finite(-inner_lr * c @ cols, c, a)


def moml_direction(
    hypergradients: jax.typing.ArrayLike,
    *,
    normalization: Normalization = "l2",
    presence: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """MOML's update direction for the logits: the MGDA point of the tasks' hypergradients.

    The ``K`` upper-level objectives each give a hypergradient ``h_i = ∂F_i/∂α``
    (a row of ``H``). MOML descends the minimum-norm point of their convex hull,

    .. math::
        d = \\sum_i γ_i \\frac{h_i}{c_i}, \\qquad
        γ = \\arg\\min_{γ ∈ Δ} \\Big\\| \\sum_i γ_i \\frac{h_i}{c_i} \\Big\\|^2,

    with the normalisers ``c_i`` of :func:`mgda_normalizers` (``"l2"``: ``‖h_i‖``,
    as LibMTL's trainer; ``"none"``: the paper's plain MGDA).

    ``γ`` solves a programme on the Gram matrix of the rows, whose entries carry a
    rounding error of about ``K ε max_i ‖h_i / c_i‖²`` (``ε`` the dtype's machine
    epsilon); a min-norm point with ``‖d‖ ≤ √(K ε) max_i ‖h_i / c_i‖`` is
    therefore zero to the programme's precision (zero lies in the hull: the logits are
    Pareto-stationary), and ``d`` is returned as exactly 0. Returning the rounding
    residue instead would let Adam, which divides by its running second moment,
    turn it into full ``meta_lr`` steps of arbitrary sign (different from one
    device to four, say).

    Args:
      hypergradients: ``[K, K]`` ``H`` (objectives × logits), e.g. from
        :func:`moml_hypergradients`.
      normalization: ``"l2"`` or ``"none"``.
      presence: ``[K]`` bool, the objectives present in the validation batch; the
        simplex spans those only and the others get ``γ_i = 0``.

    Returns:
      ``(d [K], γ [K])``: the direction (exactly zero if no objective is present or
      if zero is in the hull to the programme's precision) and the
      simplex weights of the normalised rows; NaN if ``H`` has a non-finite entry
      in a present row.

    Raises:
      ValueError: ``hypergradients`` is not square, or a bad ``normalization`` or
        ``presence``.
    References:
      Ye, Lin, Yue, Guo, Xiao & Zhang, "Multi-Objective Meta Learning", NeurIPS 2021,
      https://arxiv.org/abs/2102.07121
    """
    h = _square("hypergradients", hypergradients)
    if normalization not in ("l2", "none"):
        raise ValueError(f"normalization must be 'l2' or 'none', got {normalization!r}")
    present = as_presence(presence, h.shape[0])
    h = jnp.where(present[:, None], h, 0.0)  # an absent row's NaN stays out
    w = mgda_weights(h @ h.T, normalization=normalization, presence=present)
    norms = jnp.sqrt(jnp.sum(h * h, axis=1))
    c = jnp.where(norms > jnp.finfo(h.dtype).tiny, norms, 1.0) if normalization == "l2" else 1.0
    gamma = jnp.where(present, w * c, 0.0)
    d = jnp.where(present[:, None], w[:, None] * h, 0.0).sum(0)
    # Below the Gram programme's resolution the min-norm point is 0 (see above).
    scale = jnp.max(jnp.where(present, norms / c, 0.0))
    floor = jnp.sqrt(h.shape[0] * jnp.finfo(h.dtype).eps) * scale
    d = jnp.where(jnp.sqrt(jnp.sum(d * d)) <= floor, jnp.zeros_like(d), d)
    return d, gamma
