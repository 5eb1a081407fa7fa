"""Every balancer through every route it supports, with a non-trivial ``shared=``.

Only ``enc/w1`` is shared; ``enc/w2`` and the heads are task-specific and must
get the plain sum ``∇ Σ_k L_k`` in every route. Loss-only balancers compute the
same update in all three routes; for Gram and Jacobian balancers the
representation route balances another Jacobian (MGDA-UB), so after one step
the non-shared leaves agree with the Jacobian route while ``w1`` may not.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from step_problem import REPRESENTATION, K, loss_fn, make_batch, make_params
from step_problem import shared_w1 as S

B = mtl.balancers
FACTORIES = {
    "equal_weighting": lambda: B.equal_weighting(shared=S),
    "gradnorm": lambda: B.gradnorm(num_tasks=K, shared=S),
    "mgda": lambda: B.mgda(shared=S),
    "pcgrad": lambda: B.pcgrad(shared=S),
    "gradvac": lambda: B.gradvac(num_tasks=K, shared=S),
    "graddrop": lambda: B.graddrop(shared=S),
    "imtl": lambda: B.imtl(shared=S),
    "cagrad": lambda: B.cagrad(shared=S),
    "nash_mtl": lambda: B.nash_mtl(shared=S),
    "aligned_mtl": lambda: B.aligned_mtl(shared=S),
    "upgrad": lambda: B.upgrad(shared=S),
    "dualproj": lambda: B.dualproj(shared=S),
    "conflict_free": lambda: B.conflict_free(shared=S),
    "fairgrad": lambda: B.fairgrad(shared=S),
    "pcd": lambda: B.pcd(num_tasks=K, tau=0.3, shared=S),
    "uncertainty_weighting": lambda: B.uncertainty_weighting(num_tasks=K, shared=S),
    "dwa": lambda: B.dwa(num_tasks=K, shared=S),
    "rlw": lambda: B.rlw(num_tasks=K, seed=3, shared=S),
    "gls": lambda: B.gls(shared=S),
    "db_mtl": lambda: B.db_mtl(num_tasks=K, shared=S),
    "famo": lambda: B.famo(num_tasks=K, shared=S),
    "stch": lambda: B.stch(num_tasks=K, warmup_steps=1, shared=S),
}


def _routes(balancer) -> list[str]:
    if balancer.spec.kind == "loss":
        return ["loss", "jacobian", "representation"]
    return ["jacobian"] + (["representation"] if balancer.spec.representation else [])


def _run(name, mode, num_steps):
    step = mtl.training.make_train_step(
        loss_fn, FACTORIES[name](), optax.sgd(0.1), mode=mode, representation=REPRESENTATION
    )
    state = step.init(make_params())
    weights = []
    for i in range(num_steps):
        state, metrics = step(state, make_batch(seed=i))
        weights.append(np.asarray(metrics["weights"]))
    return state.params, np.stack(weights)


def _close(a, b, **kw):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, err_msg=jax.tree_util.keystr(path), **kw)


def _plain_sum_sgd(params, learning_rate=0.1):
    g = jax.grad(lambda p: jnp.sum(loss_fn(p, make_batch(seed=0))))(params)
    return jax.tree_util.tree_map(lambda p, x: p - learning_rate * x, params, g)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_routes_agree_with_shared(name):
    routes = _routes(FACTORIES[name]())
    loss_only = FACTORIES[name]().spec.kind == "loss"
    num_steps = 3 if loss_only else 1
    out = {mode: _run(name, mode, num_steps) for mode in routes}
    for mode, (_, weights) in out.items():
        assert weights.shape == (num_steps, K), (mode, weights.shape)
        assert np.all(np.isfinite(weights)), mode
    ref_params, ref_weights = out[routes[0]]
    for mode in routes[1:]:
        params, weights = out[mode]
        if loss_only:
            _close(params, ref_params, rtol=2e-5, atol=2e-6)
            np.testing.assert_allclose(weights, ref_weights, rtol=1e-3, atol=1e-5)
        else:
            # The task-specific leaves got the plain sum in both routes.
            for part in (lambda p: p["heads"], lambda p: p["enc"]["w2"]):
                _close(part(params), part(ref_params), rtol=2e-5, atol=2e-6)
    if not loss_only:
        expected = _plain_sum_sgd(make_params())
        _close(ref_params["heads"], expected["heads"], rtol=2e-5, atol=2e-6)
        _close(ref_params["enc"]["w2"], expected["enc"]["w2"], rtol=2e-5, atol=2e-6)


def test_representation_mode_heads_get_the_plain_sum_for_loss_balancers():
    """The reported bug: gls(shared=encoder) weighted the heads in representation mode."""
    enc = lambda path, _: "enc" in jax.tree_util.keystr(path)
    out = {}
    for mode in ("loss", "representation"):
        step = mtl.training.make_train_step(
            loss_fn, B.gls(shared=enc), optax.sgd(1.0), mode=mode, representation=REPRESENTATION
        )
        out[mode], _ = step(step.init(make_params()), make_batch())
    _close(out["representation"].params, out["loss"].params, rtol=2e-5, atol=2e-6)
    expected = _plain_sum_sgd(make_params(), learning_rate=1.0)
    _close(out["representation"].params["heads"], expected["heads"], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("mode", ["jacobian", "representation"])
def test_weights_visible_without_num_tasks(mode):
    """Without num_tasks the state records no weights; the step still reports them."""
    got = {}
    for label, bal in [("recorded", B.mgda(num_tasks=K)), ("inferred", B.mgda())]:
        step = mtl.training.make_train_step(
            loss_fn, bal, optax.sgd(0.1), mode=mode, representation=REPRESENTATION
        )
        _, metrics = step(step.init(make_params()), make_batch())
        got[label] = np.asarray(metrics["weights"])
    assert got["inferred"].shape == (K,)
    np.testing.assert_allclose(got["inferred"], got["recorded"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got["recorded"].sum(), 1.0, rtol=1e-5)


def test_effective_weights_recover_a_weighted_sum():
    from mtl_jax.training._route_common import effective_weights

    rng = np.random.default_rng(0)
    jac = [
        jnp.asarray(rng.normal(size=(K, 5, 4)), jnp.float32),
        jnp.asarray(rng.normal(size=(K, 7)), jnp.float32),
    ]
    w = np.array([0.2, 1.5, -0.3], np.float32)
    update = [jnp.tensordot(jnp.asarray(w), x, axes=1) for x in jac]
    np.testing.assert_allclose(effective_weights(jac, update), w, rtol=1e-4, atol=1e-5)
