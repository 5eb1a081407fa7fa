"""Bad inputs to the public Gram weightings: a clear ValueError for concrete bad
arguments, a non-finite result (never a plausible number) for non-finite data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax import weighting as W

KEY = jax.random.key(0)
ORD = jnp.array([[0, 1], [1, 0]])

# Every public weighting function that takes a Gram matrix, called on G.
GRAM_FNS = {
    "aligned_mtl_weights": lambda g: W.aligned_mtl_weights(g),
    "box_qp": lambda g: W.box_qp(g, jnp.ones(2)),
    "cagrad_dual": lambda g: W.cagrad_dual(g),
    "cagrad_weights": lambda g: W.cagrad_weights(g),
    "conflict_free_weights": lambda g: W.conflict_free_weights(g),
    "dualproj_weights": lambda g: W.dualproj_weights(g),
    "fairgrad_weights": lambda g: W.fairgrad_weights(g, alpha=2.0),
    "gradvac_weights": lambda g: W.gradvac_weights(g, jnp.zeros((2, 2)), orders=ORD)[0],
    "imtl_weights": lambda g: W.imtl_weights(g),
    "mgda_normalizers": lambda g: W.mgda_normalizers(g, jnp.ones(2), normalization="l2"),
    "mgda_weights": lambda g: W.mgda_weights(g),
    "min_norm_simplex": lambda g: W.min_norm_simplex(g),
    "nash_mtl_weights": lambda g: W.nash_mtl_weights(g),
    "normalize_gram": lambda g: W.normalize_gram(g),
    "pcgrad_weights": lambda g: W.pcgrad_weights(g, KEY),
    "simplex_qp": lambda g: W.simplex_qp(g),
    "upgrad_weights": lambda g: W.upgrad_weights(g),
}


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
@pytest.mark.parametrize("name", sorted(GRAM_FNS))
def test_nonfinite_gram_gives_nonfinite_weights(name, bad):
    g = jnp.array([[1.0, 0.2], [0.2, 2.0]])
    fn = GRAM_FNS[name]
    for g_bad in (g.at[0, 1].set(bad).at[1, 0].set(bad), g.at[1, 1].set(bad)):
        if name in ("normalize_gram", "mgda_normalizers"):  # per-entry transforms
            assert not np.all(np.isfinite(np.asarray(fn(g.at[1, 1].set(bad))))), name
            continue
        # Every weight non-finite, eagerly and inside the user's jit (no Python
        # branching on the values).
        assert not np.any(np.isfinite(np.asarray(fn(g_bad)))), name
        assert not np.any(np.isfinite(np.asarray(jax.jit(fn)(g_bad)))), name


@pytest.mark.parametrize("fn", [W.upgrad_weights, W.dualproj_weights])
@pytest.mark.parametrize("pref", [[-1.0, 2.0], [0.0, 0.0], [np.nan, 1.0], [1.0, np.inf]])
def test_bad_preference_raises_or_gives_nan(fn, pref):
    g = jnp.array([[1.0, -0.5], [-0.5, 2.0]])
    with pytest.raises(ValueError, match=r"pref_vector must be non-negative"):
        fn(g, pref_vector=jnp.asarray(pref))
    # Traced (the value is unknown when the function is traced): NaN weights.
    out = jax.jit(lambda g, p: fn(g, pref_vector=p))(g, jnp.asarray(pref))
    assert np.all(np.isnan(np.asarray(out)))


def test_preference_shape_and_balancer_share_the_check():
    g = jnp.eye(2)
    with pytest.raises(ValueError, match=r"pref_vector has shape \(3,\), expected \(2,\)"):
        W.upgrad_weights(g, pref_vector=jnp.ones(3))
    for factory in (mtl.balancers.upgrad, mtl.balancers.dualproj):
        with pytest.raises(ValueError, match="pref_vector must be non-negative"):
            factory(pref_vector=jnp.array([-1.0, 2.0]))
        with pytest.raises(ValueError, match=r"pref_vector has shape \(2,\), expected \(3,\)"):
            factory(pref_vector=jnp.ones(2), num_tasks=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_iters": 0}, "num_iters must be a positive int"),
        ({"num_iters": True}, "num_iters must be a positive int"),
        ({"tol": float("nan")}, r"tol must be a finite number in \(0, inf\)"),
        ({"tol": 0.0}, r"tol must be a finite number in \(0, inf\)"),
        ({"polish_iters": -1}, "polish_iters must be a non-negative int"),
    ],
)
def test_solver_arguments_one_validator(kwargs, message):
    g = jnp.eye(2)
    for fn in (W.upgrad_weights, W.dualproj_weights, W.mgda_weights, W.simplex_qp):
        with pytest.raises(ValueError, match=message):
            fn(g, **kwargs)
    for factory in (
        mtl.balancers.upgrad,
        mtl.balancers.dualproj,
        mtl.balancers.mgda,
        mtl.balancers.cagrad,
    ):
        with pytest.raises(ValueError, match=message):
            factory(**kwargs)


@pytest.mark.parametrize("reg_eps", [-1.0, float("nan")])
def test_reg_eps_validated_in_both(reg_eps):
    with pytest.raises(ValueError, match="reg_eps must be a non-negative float"):
        W.upgrad_weights(jnp.eye(2), reg_eps=reg_eps)
    with pytest.raises(ValueError, match="reg_eps must be a non-negative float"):
        mtl.balancers.dualproj(reg_eps=reg_eps)
