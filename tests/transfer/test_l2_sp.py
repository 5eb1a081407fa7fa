"""L2-SP family: closed-form fixed point, gradients of independently written penalties."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import transfer


def _tree(rng):
    return {
        "conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)},
        "dense": {
            "kernel": rng.normal(size=(5, 3)).astype(np.float32),
            "bias": rng.normal(size=(3,)).astype(np.float32),
        },
        "head": {"kernel": rng.normal(size=(3, 2)).astype(np.float32)},
    }


def _is_pre(path, leaf):
    return "head" not in jax.tree_util.keystr(path)


def _penalty_l2sp(w, w0, alpha, beta, fisher=None):
    total = 0.0
    for (path, x), x0, f in zip(
        jax.tree_util.tree_leaves_with_path(w), jax.tree.leaves(w0), jax.tree.leaves(fisher or w0)
    ):
        if _is_pre(path, x):
            weight = f if fisher is not None else 1.0
            total = total + 0.5 * alpha * jnp.sum(weight * (x - x0) ** 2)
        else:
            total = total + 0.5 * beta * jnp.sum(x**2)
    return total


def _penalty_l1sp(w, w0, alpha, beta):
    total = 0.0
    for (path, x), x0 in zip(jax.tree_util.tree_leaves_with_path(w), jax.tree.leaves(w0)):
        if _is_pre(path, x):
            total = total + alpha * jnp.sum(jnp.abs(x - x0))
        else:
            total = total + 0.5 * beta * jnp.sum(x**2)
    return total


def _penalty_gl(w, w0, alpha, beta, fisher=None):
    """Explicit loop over output channels (independent of the library's reductions)."""
    total = 0.0
    fl = jax.tree.leaves(fisher) if fisher is not None else [None] * len(jax.tree.leaves(w))
    for (path, x), x0, f in zip(jax.tree_util.tree_leaves_with_path(w), jax.tree.leaves(w0), fl):
        if not _is_pre(path, x):
            total = total + 0.5 * beta * jnp.sum(x**2)
            continue
        f = jnp.ones_like(x) if f is None else f
        if x.ndim < 2:
            for j in range(x.shape[0]):
                total = total + alpha * jnp.sqrt(f[j] * (x[j] - x0[j]) ** 2)
        else:
            size = int(np.prod(x.shape[:-1]))
            for c in range(x.shape[-1]):
                d = (x - x0)[..., c]
                total = total + alpha * np.sqrt(size) * jnp.sqrt(jnp.sum(f[..., c] * d * d))
    return total


def _apply(tx, w):
    state = tx.init(w)
    zeros = jax.tree.map(jnp.zeros_like, w)
    out, _ = jax.jit(tx.update)(zeros, state, w)
    return out


@pytest.mark.parametrize("kind", ["l2_sp", "l2_sp_fisher", "l1_sp", "gl", "gl_fisher"])
def test_update_is_gradient_of_penalty(kind, rng):
    w0 = _tree(rng)
    w = jax.tree.map(lambda x: x + rng.normal(size=x.shape).astype(np.float32), w0)
    fisher = jax.tree.map(lambda x: rng.uniform(0.1, 2.0, size=x.shape).astype(np.float32), w0)
    alpha, beta = 0.3, 0.07
    if kind == "l2_sp":
        tx = transfer.l2_sp(w0, alpha=alpha, beta=beta, pretrained=_is_pre)
        pen = lambda v: _penalty_l2sp(v, w0, alpha, beta)
    elif kind == "l2_sp_fisher":
        tx = transfer.l2_sp_fisher(w0, fisher, alpha=alpha, beta=beta, pretrained=_is_pre)
        pen = lambda v: _penalty_l2sp(v, w0, alpha, beta, fisher)
    elif kind == "l1_sp":
        tx = transfer.l1_sp(w0, alpha=alpha, beta=beta, pretrained=_is_pre)
        pen = lambda v: _penalty_l1sp(v, w0, alpha, beta)
    elif kind == "gl":
        tx = transfer.group_lasso_sp(w0, alpha=alpha, beta=beta, pretrained=_is_pre)
        pen = lambda v: _penalty_gl(v, w0, alpha, beta)
    else:
        tx = transfer.group_lasso_sp_fisher(w0, fisher, alpha=alpha, beta=beta, pretrained=_is_pre)
        pen = lambda v: _penalty_gl(v, w0, alpha, beta, fisher)
    got = _apply(tx, w)
    want = jax.jit(jax.grad(pen))(w)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, want)


def test_l2_adds_alpha_w_and_mask_forms_agree(rng):
    w0 = _tree(rng)
    w = jax.tree.map(lambda x: 2 * x, w0)
    got = _apply(transfer.l2(alpha=0.5), w)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 0.5 * b, rtol=1e-6), got, w)
    mask = jax.tree_util.tree_map_with_path(_is_pre, w0)
    a = _apply(transfer.l2_sp(w0, alpha=0.2, beta=0.3, pretrained=mask), w)
    b = _apply(
        transfer.l2_sp(w0, alpha=0.2, beta=0.3, pretrained=transfer.path_matches("conv|dense")), w
    )
    jax.tree.map(np.testing.assert_array_equal, a, b)
    np.testing.assert_allclose(a["head"]["kernel"], 0.3 * w["head"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(a["conv"]["kernel"], 0.2 * w0["conv"]["kernel"], rtol=1e-5)


def test_group_lasso_zero_at_anchor_and_group_shape(rng):
    w0 = _tree(rng)
    got = _apply(transfer.group_lasso_sp(w0, alpha=1.0, beta=0.0), w0)
    for leaf in jax.tree.leaves(got):
        assert np.all(np.isfinite(leaf)) and np.all(leaf == 0)
    # one moved output channel: only that channel gets gradient, with norm s_g * alpha
    w = jax.tree.map(lambda x: x, w0)
    w["conv"] = {"kernel": w0["conv"]["kernel"].copy()}
    w["conv"]["kernel"][..., 1] += 1.0
    g = _apply(transfer.group_lasso_sp(w0, alpha=1.0, beta=0.0), w)["conv"]["kernel"]
    assert np.all(g[..., [0, 2, 3]] == 0)
    np.testing.assert_allclose(np.linalg.norm(g[..., 1]), np.sqrt(18.0), rtol=1e-5)


def test_linear_model_converges_to_ridge_toward_anchor(rng):
    """min 1/(2n)‖Xw + b − y‖² + α/2‖w − w⁰‖² + β/2 b² has a closed form."""
    n, d = 40, 4
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + 0.5 + 0.1 * rng.normal(size=n)
    w0 = {"w": rng.normal(size=d).astype(np.float32), "b": np.zeros((), np.float32)}
    alpha, beta = 0.3, 0.05
    # normal equations in float64 on the augmented design [X, 1]
    xa = np.concatenate([x, np.ones((n, 1))], axis=1)
    reg = np.diag([alpha] * d + [beta])
    rhs = xa.T @ y / n + np.concatenate([alpha * w0["w"].astype(np.float64), [0.0]])
    sol = np.linalg.solve(xa.T @ xa / n + reg, rhs)

    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def loss(p):
        return 0.5 * jnp.mean((xj @ p["w"] + p["b"] - yj) ** 2)

    tx = optax.chain(
        transfer.l2_sp(w0, alpha=alpha, beta=beta, pretrained={"w": True, "b": False}),
        optax.sgd(0.3, momentum=0.9),
    )
    params = jax.tree.map(jnp.asarray, w0)

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=1500)
        return p

    p = run(params)
    np.testing.assert_allclose(p["w"], sol[:d], atol=1e-4)
    np.testing.assert_allclose(p["b"], sol[d], atol=1e-4)
    # and it differs from plain ridge toward zero (the anchor matters)
    ridge = np.linalg.solve(xa.T @ xa / n + reg, xa.T @ y / n)
    assert np.max(np.abs(ridge[:d] - sol[:d])) > 1e-2


def test_validation_errors(rng):
    w0 = _tree(rng)
    with pytest.raises(ValueError, match="-1"):
        transfer.l2_sp(w0, alpha=-1.0)
    with pytest.raises(ValueError, match="nan"):
        transfer.l1_sp(w0, beta=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        transfer.l2(alpha=-0.1)
    with pytest.raises(ValueError, match="structure"):
        transfer.l2_sp_fisher(w0, {"x": 1.0})
    with pytest.raises(ValueError, match="structure"):
        transfer.group_lasso_sp(w0, pretrained={"a": True})
    tx = transfer.l2_sp(w0)
    with pytest.raises(ValueError, match="params"):
        tx.update(w0, tx.init(w0))
    with pytest.raises(ValueError, match="structure"):
        tx.init({"x": jnp.zeros(2)})


@pytest.mark.parametrize(
    ("factory", "data"),
    [
        (transfer.l2, ()),
        (transfer.l2_sp, ({"w": 0.0},)),
        (transfer.l1_sp, ({"w": 0.0},)),
        (transfer.group_lasso_sp, ({"w": 0.0},)),
        (transfer.l2_sp_fisher, ({"w": 0.0}, {"w": 1.0})),
        (transfer.group_lasso_sp_fisher, ({"w": 0.0}, {"w": 1.0})),
        (transfer.fixed_exponential_pacing, ()),
        (transfer.varied_exponential_pacing, ()),
        (transfer.single_step_pacing, ()),
    ],
)
def test_hyperparameters_are_keyword_only(factory, data):
    with pytest.raises(TypeError, match="positional"):
        factory(*data, 0.1)
