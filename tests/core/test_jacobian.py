"""value_and_jacobian against jax.jacrev on several shapes and structures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl


def _problem(k, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "dense": {"kernel": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)},
        "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        "scalar": jnp.asarray(0.3, jnp.float32),
        "nested": [jnp.asarray(rng.normal(size=(2, 3, 2)), jnp.float32)],
    }
    x = jnp.asarray(rng.normal(size=(7, 5)), jnp.float32)
    targets = jnp.asarray(rng.normal(size=(k, 7, 4)), jnp.float32)

    def losses(p, x):
        h = jnp.tanh(x @ p["dense"]["kernel"] + p["bias"][None, :]) * p["scalar"]
        h = h + jnp.sum(p["nested"][0])
        scale = jnp.reshape(jnp.arange(1, k + 1, dtype=jnp.float32), (k, 1, 1))
        return jnp.mean(scale * (h[None] - targets) ** 2, axis=(1, 2))

    return params, x, losses


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_matches_jacrev(k, chunk_size):
    params, x, f = _problem(k)
    value, jac = jax.jit(mtl.value_and_jacobian(f, chunk_size=chunk_size))(params, x)
    ref = jax.jacrev(f)(params, x)
    np.testing.assert_allclose(value, f(params, x), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(ref)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_has_aux():
    params, x, f = _problem(2)
    g = lambda p, x: (f(p, x), {"n": x.shape[0]})
    (losses, aux), jac = mtl.value_and_jacobian(g, has_aux=True)(params, x)
    assert aux == {"n": 7}
    assert losses.shape == (2,)
    assert jac["bias"].shape == (2, 4)


def test_rejects_non_vector_losses():
    with pytest.raises(ValueError, match="shape \\[K\\]"):
        mtl.value_and_jacobian(lambda p: jnp.sum(p))(jnp.ones(3))
    with pytest.raises(ValueError, match="chunk_size"):
        mtl.value_and_jacobian(lambda p: p, chunk_size=0)
