"""Minimisation of a smooth objective with optax's L-BFGS, as one jit-compatible loop.

optax ships L-BFGS as a gradient transformation (``optax.lbfgs``), with its
zoom line search reading the objective through ``value_fn`` and reusing the
value and gradient it already computed (``optax.value_and_grad_from_state``).
The loop that ties these together is left to the caller. Several methods in
this package (BCTS calibration, the REFORM refit, the importance-weighted
softmax regression of the label-shift experiment) need exactly that loop, so it
lives here once.

References:
  Nocedal, Wright. Numerical Optimization, 2nd ed., Springer 2006, Alg. 7.4 and 7.5.
  Liu, Nocedal. On the limited memory BFGS method for large scale optimization.
  Mathematical Programming 45, 1989. https://doi.org/10.1007/BF01589116
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

__all__ = ["minimize"]


def minimize(fun: Callable[[Any], jax.Array], x0: Any, *, num_iters: int) -> Any:
    r"""Runs ``num_iters`` L-BFGS steps on ``fun`` from ``x0`` and returns the last iterate.

    .. math:: x_{t+1} = x_t + η_t\, d_t, \qquad d_t = -H_t \nabla f(x_t),

    where ``H_t`` is the limited-memory inverse-Hessian estimate and ``η_t`` comes
    from optax's zoom line search (strong Wolfe conditions), both with
    ``optax.lbfgs()``'s defaults. The loop is a ``lax.fori_loop`` over a fixed
    number of steps (no convergence test), so it traces once and runs under the
    caller's ``jit``/``vmap``.

    Args:
      fun: scalar objective of a pytree of arrays.
      x0: initial point, a pytree of floating-point arrays.
      num_iters: number of L-BFGS steps, ``>= 0`` (a Python int).

    Returns:
      The iterate after ``num_iters`` steps, with the structure of ``x0``.

    Raises:
      ValueError: if ``num_iters`` is negative or not an int.
    """
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 0:
        raise ValueError(f"num_iters must be an int >= 0, got {num_iters!r}")
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(_, carry):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = solver.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state

    x, _ = jax.lax.fori_loop(0, num_iters, body, (x0, solver.init(x0)))
    return x
