"""``shared=`` as a key-path prefix: what it selects, and what it changes in a balancer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax._task_tree import resolve_mask


def _params():
    return {
        "encoder": {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}},
        "encoder_extra": {"w": jnp.ones(2)},
        "heads": {"kernel": jnp.ones((2, 2, 1))},
    }


def test_prefix_selects_subtree_only():
    m = resolve_mask("encoder", _params())
    assert m == {
        "encoder": {"Dense_0": {"kernel": True, "bias": True}},
        # A prefix matches whole key names, not substrings.
        "encoder_extra": {"w": False},
        "heads": {"kernel": False},
    }


def test_nested_prefix_and_tuple_of_prefixes():
    m = resolve_mask("encoder/Dense_0/kernel", _params())
    assert jax.tree_util.tree_leaves(m).count(True) == 1
    m = resolve_mask(("encoder", "encoder_extra"), _params())
    assert m["encoder_extra"]["w"] and m["encoder"]["Dense_0"]["bias"] and not m["heads"]["kernel"]


def test_prefix_skips_flax_params_collection():
    variables = {"params": _params()}
    m = resolve_mask("encoder", variables)
    assert m["params"]["encoder"]["Dense_0"]["kernel"] and not m["params"]["heads"]["kernel"]
    # Naming the collection explicitly works too.
    assert resolve_mask("params/encoder", variables) == m


def test_prefix_selecting_nothing_raises_with_the_keys():
    with pytest.raises(ValueError, match=r"shared='trunk' selects no leaf.*encoder"):
        resolve_mask("trunk", _params())
    with pytest.raises(ValueError, match="at least one key"):
        resolve_mask("/", _params())
    with pytest.raises(TypeError, match="only strings"):
        resolve_mask(("encoder", True), _params())


def test_none_selects_everything():
    assert all(jax.tree_util.tree_leaves(resolve_mask(None, _params())))


def test_shared_mask_matches_prefix_on_a_model():
    model = mtl.models.HardParameterSharing(nn.Dense(4), num_tasks=2)
    variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    assert mtl.models.HardParameterSharing.shared_mask(variables) == resolve_mask(
        "encoder", variables
    )
    flags = jax.tree_util.tree_leaves_with_path(resolve_mask("encoder", variables))
    assert {jax.tree_util.keystr(p): f for p, f in flags} == {
        "['params']['encoder']['bias']": True,
        "['params']['encoder']['kernel']": True,
        "['params']['heads']['bias']": False,
        "['params']['heads']['kernel']": False,
    }


def test_string_shared_in_a_balancer_equals_the_bool_mask():
    """shared="encoder" gives the same update as the explicit mask; None differs."""
    rng = np.random.default_rng(0)
    params = {"encoder": jnp.asarray(rng.normal(size=(4,))), "heads": jnp.zeros((2, 3))}
    jac = {
        "encoder": jnp.asarray(rng.normal(size=(2, 4))),
        # Each head's gradient only has its own task's row.
        "heads": jnp.asarray([[[1.0, 2.0, 0.5], [0, 0, 0]], [[0, 0, 0], [3.0, -1.0, 2.0]]]),
    }
    losses = jnp.ones(2)
    mask = {"encoder": True, "heads": False}

    def update(shared):
        tx = mtl.balancers.mgda(shared=shared)
        out, _ = tx.update(jac, tx.init(params), params, task_losses=losses)
        return out

    by_prefix, by_mask, by_none = update("encoder"), update(mask), update(None)
    np.testing.assert_allclose(by_prefix["encoder"], by_mask["encoder"], rtol=1e-6)
    # Task-specific leaves get the plain sum over tasks.
    np.testing.assert_allclose(by_prefix["heads"], jnp.sum(jac["heads"], axis=0), rtol=1e-6)
    assert not np.allclose(by_prefix["encoder"], by_none["encoder"], rtol=1e-3)
