"""The training-step factory: routes agree, the loss route never builds the Jacobian."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

K = 3


@pytest.fixture(scope="module")
def problem():
    d = mtl.data.toy_regression(K, num_train=16, num_test=1, in_dim=12, out_dim=5)
    model = mtl.models.mlp_hps(K, hidden=8, out=5)
    params = model.init(jax.random.key(0), jnp.zeros((1, 12)))
    batch = (jnp.asarray(d.x_train), jnp.moveaxis(jnp.asarray(d.y_train), 0, 1))

    def mse(pred, y):
        return jnp.mean((pred - jnp.moveaxis(y, 1, 0)) ** 2, axis=(1, 2))

    loss_fn = lambda p, b: mse(model.apply(p, b[0]), b[1])
    rep = mtl.training.Representation(
        encode=lambda p, b: model.apply(p, b[0], method="encode"),
        decode=lambda p, z, b: mse(model.apply(p, z, method="decode"), b[1]),
    )
    return params, batch, loss_fn, rep


def _train(step, params, batch, n=3):
    state = step.init(params)
    for _ in range(n):
        state, metrics = step(state, batch)
    return state, metrics


def _assert_trees_close(a, b, **kw):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, **kw)


@pytest.mark.parametrize("name", ["equal_weighting", "uncertainty_weighting"])
def test_loss_route_matches_jacobian_route(problem, name):
    params, batch, loss_fn, rep = problem
    make = lambda: (
        mtl.balancers.uncertainty_weighting(num_tasks=K, learning_rate=0.1)
        if name == "uncertainty_weighting"
        else mtl.balancers.equal_weighting()
    )
    results = {}
    for mode in ["loss", "jacobian", "representation"]:
        step = mtl.training.make_train_step(
            loss_fn, make(), optax.sgd(1e-3), mode=mode, representation=rep
        )
        assert step.mode == mode
        results[mode], _ = _train(step, params, batch)
    _assert_trees_close(results["loss"].params, results["jacobian"].params, rtol=1e-5, atol=1e-6)
    _assert_trees_close(results["loss"].params, results["representation"].params, rtol=1e-5)
    _assert_trees_close(results["loss"].balancer_state, results["jacobian"].balancer_state)


def _intermediate_shapes(jaxpr):
    shapes = set()
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            shapes.add(tuple(getattr(v.aval, "shape", ())))
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
            shapes |= _intermediate_shapes(sub)
        for p in eqn.params.values():
            if hasattr(p, "jaxpr"):
                shapes |= _intermediate_shapes(getattr(p.jaxpr, "jaxpr", p.jaxpr))
    return shapes


def test_loss_route_does_not_build_the_jacobian(problem):
    params, batch, loss_fn, _ = problem
    kernel = params["params"]["encoder"]["Dense_1"]["kernel"]
    jac_shape = (K, *kernel.shape)
    for mode, expect in [("auto", False), ("jacobian", True)]:
        step = mtl.training.make_train_step(
            loss_fn, mtl.balancers.equal_weighting(), optax.sgd(1e-3), mode=mode, jit=False
        )
        jaxpr = jax.make_jaxpr(step.step)(step.init(params), batch).jaxpr
        assert (jac_shape in _intermediate_shapes(jaxpr)) is expect, mode


def test_representation_mode_is_mgda_ub(problem):
    """One MGDA-UB step equals the min-norm combination of representation gradients."""
    params, batch, loss_fn, rep = problem
    step = mtl.training.make_train_step(
        loss_fn,
        mtl.balancers.mgda(num_tasks=K),
        optax.sgd(1.0),
        mode="representation",
        representation=rep,
    )
    state, metrics = step(step.init(params), batch)
    z = rep.encode(params, batch)
    jz = jax.jacrev(lambda zz: rep.decode(params, zz, batch))(z).reshape(K, -1)
    g = np.asarray(jz @ jz.T, np.float64)
    w = np.asarray(metrics["weights"], np.float64)
    # KKT of min ½wᵀGw on the simplex: (Gw)_k equals the minimum on the support.
    gw = g @ w
    assert np.isclose(w.sum(), 1.0, atol=1e-5)
    assert np.all(gw >= gw[w > 1e-4].min() - 1e-3 * np.abs(gw).max())
    # Encoder update = VJP of the weighted representation gradient.
    cot = jnp.tensordot(jnp.asarray(w, jnp.float32), jz.reshape((K, *z.shape)), axes=1)
    _, enc_vjp = jax.vjp(lambda p: rep.encode(p, batch), params)
    (g_enc,) = enc_vjp(cot)
    expected = jax.tree_util.tree_map(jnp.subtract, params, g_enc)
    _assert_trees_close(
        state.params["params"]["encoder"], expected["params"]["encoder"], rtol=1e-4, atol=1e-5
    )


def test_mode_validation(problem):
    params, batch, loss_fn, rep = problem
    with pytest.raises(ValueError, match="loss-only"):
        mtl.training.make_train_step(loss_fn, mtl.balancers.mgda(), optax.sgd(1.0), mode="loss")
    with pytest.raises(ValueError, match="representation="):
        mtl.training.make_train_step(
            loss_fn, mtl.balancers.mgda(), optax.sgd(1.0), mode="representation"
        )
    with pytest.raises(TypeError, match=r"a balancer from mtl_jax\.balancers"):
        mtl.training.make_train_step(loss_fn, optax.sgd(1.0), optax.sgd(1.0))


def test_chunked_jacobian_route_matches(problem):
    params, batch, loss_fn, _ = problem
    out = []
    for chunk in [None, 2]:
        step = mtl.training.make_train_step(
            loss_fn, mtl.balancers.mgda(), optax.sgd(1e-3), chunk_size=chunk
        )
        out.append(_train(step, params, batch, n=2)[0].params)
    _assert_trees_close(out[0], out[1], rtol=1e-5, atol=1e-6)
