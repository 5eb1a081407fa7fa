"""The shared argument checks (mtl_jax._validate), eagerly and inside jit."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax import _validate


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _validate.check_int("n", 0), r"n must be a positive int, got 0"),
        (lambda: _validate.check_int("n", True), r"n must be a positive int, got True"),
        (lambda: _validate.check_int("n", -1, low=0), r"n must be a non-negative int, got -1"),
        (lambda: _validate.check_int("n", 1.0, allow_none=True), r"positive int or None, got 1.0"),
        (
            lambda: _validate.check_positive("tol", 0.0),
            r"tol must be a finite number in \(0, inf\)",
        ),
        (lambda: _validate.check_positive("tol", float("nan")), r"tol .* got nan"),
        (lambda: _validate.check_probability("p", 1.5), r"p must be a finite number in \[0, 1\]"),
        (lambda: _validate.check_seed(0.5), r"seed must be an int, got 0.5"),
        (lambda: _validate.check_num_tasks(None, required=True), r"num_tasks must be given"),
        (
            lambda: _validate.check_num_tasks(3, got=2, source="task_losses"),
            r"built with num_tasks=3, but task_losses gives K=2 tasks",
        ),
        (lambda: _validate.check_losses(jnp.ones((2, 1))), r"task_losses must have shape \[K\]"),
    ],
)
def test_check_names_argument_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_checks_return_the_value():
    assert _validate.check_int("n", np.int64(3)) == 3
    assert _validate.check_int("n", None, allow_none=True) is None
    assert _validate.check_positive("lr", 1) == 1.0
    assert _validate.check_num_tasks(None) is None


def _bad_shape_balancer():
    # A user's weights_fn that returns one weight too many.
    return mtl.balancers.gram_balancer(
        lambda params: (), lambda gram, losses, state: (jnp.ones(gram.shape[0] + 1), state)
    )


class TestInsideJit(chex.TestCase):
    """The checks read static shapes, so they raise the same way under the user's jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_losses_and_weights_checked(self):
        params = {"w": jnp.ones(3)}
        jac = {"w": jnp.arange(6.0).reshape(2, 3)}
        tx = mtl.balancers.mgda(num_tasks=2)

        @self.variant
        def update(jac, losses):
            return tx.update(jac, tx.init(params), params, task_losses=losses)[0]

        out = update(jac, jnp.ones(2))
        chex.assert_shape(out["w"], (3,))
        chex.assert_tree_all_finite(out)
        with pytest.raises(ValueError, match=r"task_losses must have shape \[K\]"):
            update(jac, jnp.ones((2, 1)))
        with pytest.raises(ValueError, match=r"num_tasks=2, but the task Jacobian gives K=3"):
            update({"w": jnp.ones((3, 3))}, jnp.ones(3))

        bad = _bad_shape_balancer()

        @self.variant
        def bad_update(jac, losses):
            return bad.update(jac, bad.init(params), params, task_losses=losses)[0]

        with pytest.raises(ValueError, match=r"weights_fn must return weights of shape \[K\]"):
            bad_update(jac, jnp.ones(2))
