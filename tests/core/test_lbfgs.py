"""The shared L-BFGS loop: agrees with SciPy's L-BFGS-B and runs under jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from mtl_jax._lbfgs import minimize


def _rosenbrock(p):
    x, y = p["x"], p["y"]
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


def test_rosenbrock_matches_scipy_minimiser():
    x0 = {"x": jnp.asarray(-1.2), "y": jnp.asarray(1.0)}
    out = jax.jit(lambda p: minimize(_rosenbrock, p, num_iters=60))(x0)
    ref = scipy.optimize.minimize(
        lambda v: (1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2,
        np.array([-1.2, 1.0]),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    np.testing.assert_allclose([out["x"], out["y"]], ref.x, atol=1e-3)
    np.testing.assert_allclose([out["x"], out["y"]], [1.0, 1.0], atol=1e-3)


def test_vmapped_quadratics_reach_closed_form():
    # f_b(x) = ½ xᵀ A x − c_bᵀ x has minimiser A⁻¹ c_b (float64 reference).
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 4))
    a = m @ m.T + 4 * np.eye(4)
    c = rng.normal(size=(3, 4))

    def solve(cb):
        f = lambda x: 0.5 * x @ jnp.asarray(a, jnp.float32) @ x - cb @ x
        return minimize(f, jnp.zeros(4, jnp.float32), num_iters=20)

    out = jax.jit(jax.vmap(solve))(jnp.asarray(c, jnp.float32))
    np.testing.assert_allclose(out, np.linalg.solve(a, c.T).T, atol=1e-4)


def test_zero_iterations_returns_start():
    x0 = jnp.asarray([3.0, -2.0])
    np.testing.assert_array_equal(minimize(lambda x: x @ x, x0, num_iters=0), x0)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_rejects_bad_num_iters(bad):
    with pytest.raises(ValueError, match="num_iters"):
        minimize(lambda x: x @ x, jnp.zeros(2), num_iters=bad)
