"""The Gramian route (``mode="gramian"``, the default for Gram balancers) equals the
Jacobian route: same update, balancer state and applied weights, for every Gram
balancer, under jit, chunked, with ``shared=`` masks, non-finite tasks and 4 devices."""

import inspect
import pathlib
import sys

import jax
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.training import _gramian, _plan, _routes

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import step_problem as sp

SKIP = {"check_balancer", "gram_balancer", "jacobian_balancer", "loss_balancer", "task_weights"}
SKIP |= {"constant"}  # needs weights=; a loss method, not on the Gramian route
SKIP |= {"make", "names", "auto_lambda", "auto_lambda_hypergradient"}  # registry; bilevel
SKIP |= {"moml", "forum"}  # bilevel: need task_loss_fn= (tests/balancers/test_moml, test_forum)


def _factory(name, **extra):
    factory = getattr(mtl.balancers, name)
    sig = inspect.signature(factory).parameters
    kw = {k: v for k, v in (("num_tasks", sp.K), ("seed", 0)) if k in sig}
    return factory(**kw, **extra)


GRAM = sorted(
    n
    for n in mtl.balancers.__all__
    if n[0].islower() and n not in SKIP and _factory(n).spec.kind == "gram"
)


def test_every_gram_balancer_is_covered():
    assert {"mgda", "pcgrad", "upgrad", "imtl", "cagrad", "gradnorm", "db_mtl"} <= set(GRAM)


def _both_routes(balancer, *, chunk_size=None, batch=None):
    """Both routes' outputs from one jitted function."""
    params, batch = sp.make_params(), batch or sp.make_batch()
    state = balancer.init(params)

    def both(params, state, batch):
        plan = lambda route: _plan.resolve(balancer, route, params, chunk_size=chunk_size)
        g = _gramian.gramian_route(sp.loss_fn, plan("gramian"), params, state, batch)
        j = _routes.jacobian_route(sp.loss_fn, plan("jacobian"), params, state, batch)
        return g, j

    return jax.jit(both)(params, state, batch)


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


CASES = [(n, "all") for n in GRAM] + [(n, "w1") for n in ("gradnorm", "mgda", "pcgrad")]


@pytest.mark.parametrize(("name", "shared"), CASES)
def test_gramian_equals_jacobian(name, shared):
    extra = {} if shared == "all" else {"shared": sp.shared_w1}
    if name == "gradnorm" and shared == "w1":
        extra = {"shared": "enc"}  # its layer: the last shared leaf (enc/w2), not all shared
    g, j = _both_routes(_factory(name, **extra))
    # FairGrad's and Nash-MTL's iterative solvers are themselves only good to ~1e-4
    # here: FairGrad's weights on the same G differ by that much between jit and eager.
    tol = {"rtol": 2e-3, "atol": 1e-4} if name in ("fairgrad", "nash_mtl") else {}
    _assert_close(g.grads, j.grads, **tol)
    _assert_close(g.balancer_state, j.balancer_state, **tol)
    _assert_close(g.weights, j.weights, **({"rtol": 1e-4, "atol": 1e-5} | tol))
    np.testing.assert_array_equal(np.asarray(g.losses), np.asarray(j.losses))


def test_chunked_with_a_partial_chunk():
    g, j = _both_routes(_factory("imtl"), chunk_size=2)  # K = 3: chunks of 2 and 1
    _assert_close(g.grads, j.grads)
    _assert_close(g.weights, j.weights, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mgda", "db_mtl"])
def test_nonfinite_task_gradient_is_flagged_like_the_jacobian_route(name):
    batch = sp.make_batch()
    batch["grad_poison"][:, 2] = np.inf  # task 2's gradient w.r.t. heads/w
    g, j = _both_routes(_factory(name), batch=batch)
    np.testing.assert_array_equal(np.asarray(g.task_finite), [True, True, False])
    np.testing.assert_array_equal(np.asarray(g.task_finite), np.asarray(j.task_finite))


def test_auto_mode_picks_the_gramian_route():
    make = lambda b, mode="auto": mtl.training.make_train_step(
        sp.loss_fn, b, optax.sgd(0.1), mode=mode
    )
    assert make(_factory("mgda")).mode == "gramian"
    assert make(_factory("graddrop")).mode == "jacobian"
    assert make(_factory("equal_weighting")).mode == "loss"
    with pytest.raises(ValueError, match="gramian"):
        make(_factory("graddrop"), "gramian")
    with pytest.raises(ValueError, match="chunk_size"):
        mtl.training.make_train_step(sp.loss_fn, _factory("mgda"), optax.sgd(0.1), chunk_size=0)


def test_skip_policy_and_four_devices_match_the_jacobian_route():
    mesh = jax.make_mesh((4,), ("data",))
    bad = sp.make_batch(seed=1)
    bad["loss_poison"][:, 0] = np.nan
    batches = [sp.make_batch(seed=0), bad, sp.make_batch(seed=1)]
    out = {}
    for mode, m in [("gramian", None), ("gramian", mesh), ("jacobian", None)]:
        step = mtl.training.make_train_step(
            sp.loss_fn, _factory("imtl", shared=sp.shared_w1), optax.adam(1e-2), mode=mode, mesh=m
        )
        state = step.init(sp.make_params())
        weights = []
        for b in batches:
            state, metrics = step(state, b if m is None else mtl.training.shard_batch(b, m))
            weights.append(np.asarray(metrics["weights"]))
        assert int(state.skipped) == 1
        out[mode, m is None] = (state.params, np.stack(weights))
    ref = out["jacobian", True]
    for key in [("gramian", True), ("gramian", False)]:
        _assert_close(out[key][0], ref[0])
        _assert_close(out[key][1], ref[1], rtol=1e-4, atol=1e-5)


def _route_jaxpr(balancer) -> str:
    params, batch = sp.make_params(), sp.make_batch()
    state = balancer.init(params)
    route = lambda p, s, b: _gramian.gramian_route(
        sp.loss_fn, _plan.resolve(balancer, "gramian", p), p, s, b
    )
    return str(jax.make_jaxpr(route)(params, state, batch))


def test_diagonal_only_balancers_skip_the_gram_contraction():
    # DB-MTL reads only diag(G): row sums of squares, no [K, K] dot_general
    # (its result equals the Jacobian route's: test_gramian_equals_jacobian).
    kk = f"f32[{sp.K},{sp.K}] = dot_general"
    assert _gramian.diagonal_only(_factory("db_mtl"))
    assert kk not in _route_jaxpr(_factory("db_mtl"))
    assert kk in _route_jaxpr(_factory("mgda"))


def test_gradnorm_never_stacks_the_per_task_gradients_of_its_layer():
    # GradNorm (shared="enc": its layer W is enc/w2) keeps each task's squared
    # norm of W's gradient, never a [K, 8, 8] stack; MGDA on the same leaves does.
    stacked = f"f32[{sp.K},8,8]"
    assert _gramian.diagonal_only(_factory("gradnorm"))
    assert stacked not in _route_jaxpr(_factory("gradnorm", shared="enc"))
    assert stacked in _route_jaxpr(_factory("mgda", shared="enc"))
