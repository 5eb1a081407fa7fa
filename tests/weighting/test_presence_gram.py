"""Task presence in the Gram weightings: an absent task gets weight exactly 0 and the
present tasks get the weights of the |S|-task problem on their own Gram matrix.

The presence mask is data: one compiled function serves every mask, and a NaN in an
absent task's row of G does not reach the weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting as W

K = 4
PRESENT = np.array([True, False, True, True])
S = np.flatnonzero(PRESENT)
ORDERS = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]])


def _restrict_orders(orders, keep):
    """Each present row's visiting order restricted to the present tasks, renumbered."""
    pos = {t: i for i, t in enumerate(keep)}
    return np.array([[pos[t] for t in orders[i] if t in pos] for i in keep])


def _fns():
    """name -> (f(G, presence) -> [K] weights, f on the restricted problem)."""

    def plain(f, **kw):
        return (
            lambda g, m: f(g, presence=m, **kw),
            lambda g: f(g, **kw),
        )

    out = {
        "mgda": plain(W.mgda_weights),
        "mgda_l2": plain(W.mgda_weights, normalization="l2"),
        "upgrad": plain(W.upgrad_weights),
        "dualproj": plain(W.dualproj_weights),
        "cagrad": plain(W.cagrad_weights, c=0.5),
        "imtl": plain(W.imtl_weights),
        "aligned_mtl": plain(W.aligned_mtl_weights),
        "conflict_free": plain(W.conflict_free_weights),
        "fairgrad_1": plain(W.fairgrad_weights, alpha=1.0),
        "fairgrad_2": plain(W.fairgrad_weights, alpha=2.0),
        "fairgrad_0": plain(W.fairgrad_weights, alpha=0.0),
        "nash_mtl": plain(W.nash_mtl_weights, max_norm=1.0),
        "pcgrad": (
            lambda g, m: W.pcgrad_weights(g, orders=ORDERS, presence=m),
            lambda g: W.pcgrad_weights(g, orders=_restrict_orders(ORDERS, S)),
        ),
        "gradvac": (
            lambda g, m: W.gradvac_weights(g, 0.3 * jnp.ones((K, K)), orders=ORDERS, presence=m)[0],
            lambda g: W.gradvac_weights(
                g, 0.3 * jnp.ones((len(S), len(S))), orders=_restrict_orders(ORDERS, S)
            )[0],
        ),
    }
    return out


FNS = _fns()


def _jacobian(seed=0):
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(K, 6)) * np.array([[1.0], [3.0], [0.5], [2.0]])
    jac[2] -= 0.8 * jac[0]  # a conflict, so the methods do something
    return jac.astype(np.float32)


@pytest.mark.parametrize("name", sorted(FNS))
def test_absent_task_is_removed_from_the_problem(name):
    f_masked, f_small = FNS[name]
    jac = _jacobian()
    g = jnp.asarray(jac @ jac.T)
    full = np.asarray(f_masked(g, jnp.asarray(PRESENT)))
    small = np.asarray(f_small(g[np.ix_(S, S)]))
    assert full[~PRESENT].tolist() == [0.0]  # exactly zero
    np.testing.assert_allclose(full[S], small, rtol=2e-5, atol=1e-6)
    # All present: identical to no mask at all.
    np.testing.assert_array_equal(
        np.asarray(f_masked(g, jnp.ones(K, bool))), np.asarray(f_masked(g, None))
    )


@pytest.mark.parametrize("name", ["mgda", "upgrad", "cagrad", "nash_mtl", "pcgrad", "imtl"])
def test_presence_is_data_under_jit_and_absent_nan_does_not_leak(name):
    f_masked, _ = FNS[name]
    jac = _jacobian(1)
    g = jnp.asarray(jac @ jac.T)
    traces = []

    @jax.jit
    def step(g, m):
        traces.append(1)
        return f_masked(g, m)

    a = np.asarray(step(g, jnp.asarray(PRESENT)))
    b = np.asarray(step(g, jnp.asarray([True, True, False, True])))
    assert len(traces) == 1
    assert a[1] == 0.0 and b[2] == 0.0
    # A NaN in the absent task's row and column changes nothing.
    g_nan = g.at[1, :].set(jnp.nan).at[:, 1].set(jnp.nan)
    np.testing.assert_allclose(np.asarray(step(g_nan, jnp.asarray(PRESENT))), a, rtol=1e-6)
    # ... but in a present task's row it makes every weight NaN.
    assert np.all(np.isnan(np.asarray(step(g_nan, jnp.ones(K, bool)))))


@pytest.mark.parametrize("name", sorted(FNS))
def test_all_absent_gives_zero_weights(name):
    f_masked, _ = FNS[name]
    jac = _jacobian()
    w = np.asarray(f_masked(jnp.asarray(jac @ jac.T), jnp.zeros(K, bool)))
    assert w.tolist() == [0.0] * K


def test_mgda_partially_labelled_batch():
    """The issue's example: an absent task (zero loss, zero gradient) took all of MGDA's
    weight; with presence it gets none and the labelled task's gradient is kept."""
    g1 = np.array([0.3, -0.2, 0.5], np.float32)
    jac = np.stack([g1, np.zeros(3, np.float32)])
    g = jnp.asarray(jac @ jac.T)
    np.testing.assert_allclose(W.mgda_weights(g), [0.0, 1.0], atol=1e-6)  # the defect
    w = W.mgda_weights(g, presence=jnp.array([True, False]))
    np.testing.assert_allclose(w, [1.0, 0.0], rtol=1e-6)
    assert float(w[1]) == 0.0
    w = W.upgrad_weights(g, presence=jnp.array([True, False]))
    np.testing.assert_allclose(np.asarray(w), [1.0, 0.0], atol=1e-6)


def test_qp_solvers_fix_absent_variables_at_zero():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 7)).astype(np.float32)
    q = jnp.asarray(a @ a.T)
    m = jnp.array([True, True, False, True, False])
    s = np.flatnonzero(np.asarray(m))
    x = np.asarray(W.simplex_qp(q, presence=m))
    np.testing.assert_allclose(x[s], W.simplex_qp(q[np.ix_(s, s)]), rtol=1e-5, atol=1e-7)
    assert x[~np.asarray(m)].tolist() == [0.0, 0.0]
    lower = jnp.asarray(rng.uniform(size=5).astype(np.float32))
    v = np.asarray(W.box_qp(q, lower, presence=m))
    np.testing.assert_allclose(v[s], W.box_qp(q[np.ix_(s, s)], lower[s]), rtol=1e-5, atol=1e-7)
    assert v[~np.asarray(m)].tolist() == [0.0, 0.0]


def test_gradvac_leaves_absent_targets_unchanged():
    jac = _jacobian(2)
    g = jnp.asarray(jac @ jac.T)
    targets = jnp.asarray(np.random.default_rng(4).uniform(-0.5, 0.5, (K, K)).astype(np.float32))
    _, new = W.gradvac_weights(g, targets, orders=ORDERS, presence=jnp.asarray(PRESENT))
    new, targets = np.asarray(new), np.asarray(targets)
    pair = PRESENT[:, None] & PRESENT[None, :] & ~np.eye(K, dtype=bool)
    np.testing.assert_array_equal(new[~pair], targets[~pair])
    _, small = W.gradvac_weights(
        g[np.ix_(S, S)], targets[np.ix_(S, S)], orders=_restrict_orders(ORDERS, S)
    )
    np.testing.assert_allclose(new[np.ix_(S, S)], np.asarray(small), rtol=1e-5, atol=1e-6)


def test_presence_validation():
    g = jnp.eye(3)
    with pytest.raises(ValueError, match="presence must have shape"):
        W.mgda_weights(g, presence=jnp.ones(2, bool))
    with pytest.raises(ValueError, match="presence must hold booleans or 0/1"):
        W.upgrad_weights(g, presence=jnp.array([1.0, 0.5, 1.0]))
    # {0, 1} numbers are accepted.
    w = W.upgrad_weights(g, presence=jnp.array([1, 0, 1]))
    assert float(w[1]) == 0.0
