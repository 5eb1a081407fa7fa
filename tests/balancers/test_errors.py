"""Each common mistake at a balancer entry point, and the message it must produce.

Every case is a ``(exception, message regex, thunk)``; the message names the
argument and the offending value (or says what to do instead).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

B = mtl.balancers


def _params():
    return {"enc": jnp.zeros((3, 2)), "head": jnp.zeros((2,))}


def _jac(k):
    rng = np.random.default_rng(k)
    return jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.normal(size=(k, *p.shape)), jnp.float32), _params()
    )


def _update(tx, jac, losses, params="default"):
    params = _params() if params == "default" else params
    return tx.update(jac, tx.init(_params()), params, task_losses=losses)


CASES = {
    # --- K disagreements -------------------------------------------------------------
    "losses_vs_jacobian": (
        ValueError,
        r"leading task axis of size K=2 \(from task_losses\)",
        lambda: _update(B.mgda(), _jac(3), jnp.ones(2)),
    ),
    "state_vs_jacobian_gram": (
        ValueError,
        r"built with num_tasks=3, but the task Jacobian gives K=2 tasks",
        lambda: _update(B.mgda(num_tasks=3), _jac(2), jnp.ones(2)),
    ),
    "state_vs_jacobian_gradnorm": (
        ValueError,
        r"built with num_tasks=3, but the task Jacobian gives K=2 tasks",
        lambda: _update(B.gradnorm(num_tasks=3), _jac(2), jnp.ones(2)),
    ),
    "num_tasks_vs_losses_loss_balancer": (
        ValueError,
        r"built with num_tasks=3, but task_losses gives K=2 tasks",
        lambda: _update(B.dwa(num_tasks=3), _jac(2), jnp.ones(2)),
    ),
    "num_tasks_vs_losses_loss_route": (
        ValueError,
        r"built with num_tasks=3, but task_losses gives K=2 tasks",
        lambda: B.rlw(num_tasks=3).spec.loss_weights(jnp.ones(2), B.rlw(num_tasks=3).init(None)),
    ),
    # --- malformed losses ------------------------------------------------------------
    "losses_k_by_1": (
        ValueError,
        r"task_losses must have shape \[K\], got shape \(3, 1\).*squeeze",
        lambda: _update(B.mgda(num_tasks=3), _jac(3), jnp.ones((3, 1))),
    ),
    "losses_k_by_1_loss_route": (
        ValueError,
        r"task_losses must have shape \[K\], got shape \(3, 1\).*squeeze",
        lambda: B.dwa(num_tasks=3).spec.loss_weights(
            jnp.ones((3, 1)), B.dwa(num_tasks=3).init(None)
        ),
    ),
    "losses_python_list": (
        TypeError,
        r"task_losses must be one array of shape \[K\], got a Python list of 3 items.*jnp\.stack",
        lambda: _update(B.pcgrad(), _jac(3), [jnp.ones(()), jnp.ones(()), jnp.ones(())]),
    ),
    "losses_empty": (
        ValueError,
        r"task_losses has shape \(0,\)",
        lambda: _update(B.equal_weighting(), _jac(2), jnp.ones((0,))),
    ),
    "losses_integer": (
        TypeError,
        r"task_losses must be floating point, got dtype int32",
        lambda: _update(B.gls(), _jac(2), jnp.ones(2, jnp.int32)),
    ),
    # --- shared= masks ---------------------------------------------------------------
    "shared_selects_nothing": (
        ValueError,
        r"shared= selects no leaf",
        lambda: _update(B.mgda(shared=lambda path, leaf: False), _jac(2), jnp.ones(2)),
    ),
    "shared_wrong_structure": (
        ValueError,
        r"shared=: mask structure .* does not match",
        lambda: _update(B.imtl(shared={"enc": True}), _jac(2), jnp.ones(2)),
    ),
    # --- balancer in the wrong place -------------------------------------------------
    "balancer_after_optimizer_in_chain": (
        ValueError,
        r"params-shaped updates with no task axis.*must come first in optax\.chain",
        lambda: optax.chain(optax.adam(1e-3), B.mgda()).update(
            jax.tree_util.tree_map(jnp.ones_like, _params()),
            optax.chain(optax.adam(1e-3), B.mgda()).init(_params()),
            _params(),
            task_losses=jnp.ones(2),
        ),
    ),
    "jacobian_structure_vs_params": (
        ValueError,
        r"task_grads structure .* does not match params structure",
        lambda: _update(B.mgda(), {"enc": _jac(2)["enc"]}, jnp.ones(2)),
    ),
    "jacobian_leaf_shape_vs_params": (
        ValueError,
        r"leaf \['head'\]: task gradient shape \(2, 3\) is not \(K, \*param.shape\) = \(2, 2\)",
        lambda: _update(B.mgda(), dict(_jac(2), head=jnp.ones((2, 3))), jnp.ones(2)),
    ),
    "optimizer_as_balancer": (
        TypeError,
        r"balancer must be an mtl_jax.balancers.Balancer, got an optax .*optimizer=",
        lambda: B.check_balancer(optax.adam(1e-3)),
    ),
    "chain_as_balancer": (
        TypeError,
        r"balancer must be an mtl_jax.balancers.Balancer, got an optax",
        lambda: B.check_balancer(optax.chain(B.mgda(), optax.adam(1e-3))),
    ),
    "factory_not_called": (
        TypeError,
        r"got the factory mgda itself: call it, e.g. mtl.balancers.mgda\(\)",
        lambda: B.check_balancer(B.mgda),
    ),
    "not_a_balancer": (
        TypeError,
        r"balancer must be an mtl_jax.balancers.Balancer .*got str",
        lambda: B.check_balancer("mgda"),
    ),
    # --- hyperparameters -------------------------------------------------------------
    "num_tasks_zero": (
        ValueError,
        r"num_tasks must be a positive int, got 0",
        lambda: B.mgda(num_tasks=0),
    ),
    "num_tasks_float": (
        ValueError,
        r"num_tasks must be a positive int, got 2.0",
        lambda: B.dwa(num_tasks=2.0),
    ),
    "num_tasks_missing": (
        ValueError,
        r"num_tasks must be given \(a positive int\), got None",
        lambda: B.uncertainty_weighting(),
    ),
    "gradvac_without_num_tasks": (
        ValueError,
        r"gradvac needs num_tasks=K",
        lambda: B.gradvac(),
    ),
    "negative_learning_rate": (
        ValueError,
        r"learning_rate must be a finite number in \(0, inf\), got -0.1",
        lambda: B.uncertainty_weighting(num_tasks=2, learning_rate=-0.1),
    ),
    "nan_learning_rate": (
        ValueError,
        r"learning_rate must be a finite number in \(0, inf\), got nan",
        lambda: B.famo(num_tasks=2, learning_rate=float("nan")),
    ),
    "negative_alpha": (
        ValueError,
        r"alpha must be a finite number in \[0, inf\), got -1.0",
        lambda: B.gradnorm(num_tasks=2, alpha=-1.0),
    ),
    "infinite_alpha": (
        ValueError,
        r"alpha must be a finite number in \[0, inf\), got inf",
        lambda: B.fairgrad(alpha=float("inf")),
    ),
    "beta_out_of_range": (
        ValueError,
        r"beta must be a finite number in \[0, 1\), got 1.0",
        lambda: B.db_mtl(num_tasks=2, beta=1.0),
    ),
    "temperature_zero": (
        ValueError,
        r"temperature must be a finite number in \(0, inf\), got 0.0",
        lambda: B.dwa(num_tasks=2, temperature=0.0),
    ),
    "seed_not_int": (
        ValueError,
        r"seed must be an int, got 0.5",
        lambda: B.pcgrad(seed=0.5),
    ),
    "leak_out_of_range": (
        ValueError,
        r"leak must be a float or a 1-D sequence in \[0, 1\], got 2.0",
        lambda: B.graddrop(leak=2.0),
    ),
    "optimizer_not_optax": (
        TypeError,
        r"optimizer must be an optax GradientTransformation",
        lambda: B.gradnorm(num_tasks=2, optimizer="adam"),
    ),
    "hyperparameter_positional": (
        TypeError,
        r"uncertainty_weighting\(\) takes 0 positional arguments",
        lambda: B.uncertainty_weighting(2, 0.1),
    ),
    "num_iters_not_positive": (
        ValueError,
        r"num_iters must be a positive int, got 0",
        lambda: B.nash_mtl(num_iters=0),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mistake_gives_clear_error(case):
    exc, pattern, thunk = CASES[case]
    with pytest.raises(exc, match=pattern):
        thunk()


def test_errors_raise_at_trace_time_under_jit():
    tx = B.mgda(num_tasks=3)
    params = _params()
    step = jax.jit(lambda j, s, ls: tx.update(j, s, params, task_losses=ls))
    with pytest.raises(ValueError, match=re.escape("got shape (3, 1)")):
        step(_jac(3), tx.init(params), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="num_tasks=3, but the task Jacobian gives K=2"):
        step(_jac(2), tx.init(params), jnp.ones(2))


def test_check_balancer_returns_a_balancer():
    tx = B.mgda()
    assert B.check_balancer(tx) is tx
