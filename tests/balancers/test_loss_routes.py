"""Loss-only balancers: the single-backward route equals the Jacobian route.

``make_train_step(mode="loss")`` differentiates ``Σ_k w_k L_k`` once;
``mode="jacobian"`` builds the task Jacobian and calls the transform. After a
few steps both must hold the same parameters and weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

K = 3
BALANCERS = {
    "equal_weighting": lambda: mtl.balancers.equal_weighting(num_tasks=K),
    "uncertainty_weighting": lambda: mtl.balancers.uncertainty_weighting(
        num_tasks=K, learning_rate=0.1
    ),
    "dwa": lambda: mtl.balancers.dwa(num_tasks=K),
    "gls": lambda: mtl.balancers.gls(num_tasks=K),
    "rlw": lambda: mtl.balancers.rlw(num_tasks=K, seed=1),
    "stch": lambda: mtl.balancers.stch(num_tasks=K, warmup_steps=2),
    "famo": lambda: mtl.balancers.famo(num_tasks=K),
    "constant": lambda: mtl.balancers.constant(weights=jnp.array([0.5, 1.0, 2.0])),
    "scale_invariant": lambda: mtl.balancers.scale_invariant(num_tasks=K),
    "imtl_l": lambda: mtl.balancers.imtl_l(num_tasks=K, learning_rate=0.1),
    "cosmos": lambda: mtl.balancers.cosmos(num_tasks=K, pref_vector=jnp.array([0.2, 0.3, 0.5])),
    "pbi": lambda: mtl.balancers.pbi(num_tasks=K, pref_vector=jnp.array([0.2, 0.3, 0.5])),
}


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_loss_route_equals_jacobian_route(name):
    assert BALANCERS[name]().spec.kind == "loss"
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(K, 16)), jnp.float32)
    params = {
        "encoder": jnp.asarray(rng.normal(size=(5, 4)) / 2, jnp.float32),
        "heads": jnp.asarray(rng.normal(size=(K, 4)), jnp.float32),
    }

    def loss_fn(p, batch):
        xb, yb = batch
        z = jnp.tanh(xb @ p["encoder"])
        pred = jnp.einsum("nd,kd->kn", z, p["heads"])
        return jnp.mean((pred - yb) ** 2, axis=1) + 0.1

    out = {}
    for mode in ("loss", "jacobian"):
        step = mtl.training.make_train_step(loss_fn, BALANCERS[name](), optax.sgd(0.05), mode=mode)
        state = step.init(params)
        for _ in range(4):
            state, metrics = step(state, (x, y))
        out[mode] = (state.params, metrics["weights"])
    for a, b in zip(*(jax.tree_util.tree_leaves(out[m]) for m in ("loss", "jacobian"))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
