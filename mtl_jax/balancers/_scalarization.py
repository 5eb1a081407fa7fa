"""COSMOS and PBI as balancers: the gradient of a preference-vector scalarisation.

Ruchte & Grabocka 2021, https://arxiv.org/abs/2103.13392 (COSMOS) and Zhang & Li
2007, https://doi.org/10.1109/TEVC.2007.892759 (PBI), as torchjd's scalarizers.
The pure functions are :func:`mtl_jax.weighting.cosmos_weights` and
:func:`mtl_jax.weighting.pbi_weights`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _validate
from mtl_jax._task_tree import MaskSpec
from mtl_jax.balancers import _base, _state
from mtl_jax.weighting import _scalarization

__all__ = ["cosmos", "pbi"]


def _check_vector(name, value, num_tasks, *, non_negative):
    if value is None:
        return None
    v = jnp.asarray(value, jnp.float32)
    ok = v.ndim == 1 and v.shape[0] > 0 and bool(jnp.all(jnp.isfinite(v)))
    if ok and non_negative:
        ok = bool(jnp.all(v >= 0)) and bool(jnp.any(v > 0))
    if not ok:
        kind = "a non-negative, non-zero" if non_negative else "a finite"
        raise ValueError(f"{name} must be {kind} [K] vector, got {value!r}")
    if num_tasks is not None and v.shape != (num_tasks,):
        raise ValueError(f"{name} has shape {v.shape} but num_tasks={num_tasks}")
    return v


def _loss_balancer(weights_of_losses, shared, num_tasks):
    def init(params):
        del params
        return _state.init_weights_state(num_tasks)

    def weights_fn(losses, state, presence=None):
        w = weights_of_losses(losses, presence)
        return w, _state.WeightsState(_state.record_weights(state.weights, w))

    return _base.loss_balancer(init, weights_fn, shared=shared)


def cosmos(
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    lambda_: float = 1.0,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """COSMOS: the gradient of ``rᵀL − λ cos(r, L)`` for a preference vector ``r``.

    The update is ``Σ_k w_k ∇L_k`` with ``w = r − λ ∂cos(r, L)/∂L`` at the current
    losses: a linear scalarisation plus a pull of the loss vector towards the
    direction ``r``. The full method also feeds ``r`` to the network and draws a
    fresh ``r ~ Dir(α)`` per batch to learn the whole Pareto front; for that,
    condition the model on ``r`` and minimise
    :func:`mtl_jax.weighting.cosmos_objective` ``(losses, r)`` in the loss
    function; this balancer is the fixed-preference case.

    Scale: for ``λ = 0`` and ``r = 1`` the update is :func:`equal_weighting`'s; the
    default uniform ``r = 1/K`` gives the mean-gradient scale.

    Modes: loss-only (one backward pass). An absent task's coordinates are
    removed from ``L`` and ``r`` (its weight is 0).

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      pref_vector: ``[K]`` non-negative preference ``r`` (default uniform ``1/K``
        over the present tasks).
      lambda_: ``λ ≥ 0`` (the paper uses 0.01 to 8 depending on the data set).
      shared: leaves to weight (all by default); the others receive the plain sum.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Ruchte & Grabocka 2021, https://arxiv.org/abs/2103.13392
    """
    _validate.check_num_tasks(num_tasks)
    lambda_ = _validate.check_number("lambda_", lambda_, low=0.0)
    r = _check_vector("pref_vector", pref_vector, num_tasks, non_negative=True)
    return _loss_balancer(
        lambda losses, presence: _scalarization.cosmos_weights(
            losses, pref_vector=r, lambda_=lambda_, presence=presence
        ),
        shared,
        num_tasks,
    )


def pbi(
    *,
    pref_vector: jax.typing.ArrayLike | None = None,
    theta: float = 5.0,
    reference: jax.typing.ArrayLike | None = None,
    shared: MaskSpec = None,
    num_tasks: int | None = None,
) -> _base.Balancer:
    """PBI: the gradient of ``d₁ + θ d₂``, the distance along and off a preference line.

    ``d₁ = (L − z*)ᵀŵ`` is the progress along the unit preference direction ``ŵ``
    and ``d₂ = ‖(L − z*) − d₁ŵ‖`` the distance from that line; the update is
    ``Σ_k w_k ∇L_k`` with ``w = ∂(d₁ + θ d₂)/∂L`` at the current losses, so it
    descends while steering the losses onto the line.

    Scale: on the preference line the weights are ``ŵ`` (unit norm).

    Modes: loss-only (one backward pass). An absent task's coordinates are
    removed from ``L``, ``w`` and ``z*`` (its weight is 0).

    Cost: loss-only (one backward pass of the weighted loss sum).

    Args:
      pref_vector: ``[K]`` non-negative direction ``w`` (default uniform).
      theta: ``θ ≥ 0`` (MOEA/D uses 5).
      reference: ``[K]`` reference point ``z*`` below the losses (default 0).
      shared: leaves to weight (all by default); the others receive the plain sum.
      num_tasks: if given, the state records the weights of each update.

    Returns:
      A :class:`~mtl_jax.balancers.Balancer` of kind ``"loss"``.

    References:
      Zhang & Li 2007, https://doi.org/10.1109/TEVC.2007.892759
    """
    _validate.check_num_tasks(num_tasks)
    theta = _validate.check_number("theta", theta, low=0.0)
    w = _check_vector("pref_vector", pref_vector, num_tasks, non_negative=True)
    z = _check_vector("reference", reference, num_tasks, non_negative=False)
    return _loss_balancer(
        lambda losses, presence: _scalarization.pbi_weights(
            losses, pref_vector=w, theta=theta, reference=z, presence=presence
        ),
        shared,
        num_tasks,
    )
