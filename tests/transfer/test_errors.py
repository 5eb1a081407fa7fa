"""Each mistake a user can make with the L2-SP family, and its message."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import transfer

ANCHOR = {"body": {"kernel": jnp.ones((4, 8))}, "head": {"kernel": jnp.ones((8, 10))}}
PARAMS = {"body": {"kernel": jnp.zeros((4, 8))}, "head": {"kernel": jnp.zeros((8, 5))}}
HEAD_MSG = (
    r"leaf \['head'\]\['kernel'\] has shape \(8, 5\) in params but \(8, 10\) in anchor; "
    r"if it is a new or re-sized layer .* exclude it from the starting point with "
    r"pretrained="
)

MISTAKES = {
    "l2_sp, head re-sized, no pretrained=": (
        lambda: transfer.l2_sp(ANCHOR).init(PARAMS),
        HEAD_MSG,
    ),
    "l1_sp, head re-sized": (
        lambda: transfer.l1_sp(ANCHOR).init(PARAMS),
        HEAD_MSG,
    ),
    "l2_sp_fisher, head re-sized": (
        lambda: transfer.l2_sp_fisher(ANCHOR, jax.tree.map(jnp.ones_like, ANCHOR)).init(PARAMS),
        HEAD_MSG,
    ),
    "fisher of the wrong shape": (
        lambda: transfer.l2_sp_fisher({"w": jnp.ones(3)}, {"w": jnp.ones(4)}).init(
            {"w": jnp.zeros(3)}
        ),
        r"leaf \['w'\] has shape \(3,\) in params but \(4,\) in fisher",
    ),
    "negative alpha": (lambda: transfer.l2_sp(ANCHOR, alpha=-1.0), "alpha must be"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_mistake_message(mistake):
    call, message = MISTAKES[mistake]
    with pytest.raises(ValueError, match=message):
        call()


def test_update_names_the_leaf_under_jit():
    tx = transfer.l2_sp(ANCHOR)
    state = transfer.SPState(anchor=ANCHOR, fisher=None)
    with pytest.raises(ValueError, match=HEAD_MSG):
        jax.jit(tx.update)(PARAMS, state, PARAMS)


def test_pretrained_mask_excludes_the_new_head():
    tx = optax.chain(
        transfer.l2_sp(
            ANCHOR,
            alpha=1.0,
            beta=0.0,
            pretrained=lambda path, _: "body" in jax.tree_util.keystr(path),
        ),
        optax.sgd(0.5),
    )
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    u, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    new = optax.apply_updates(PARAMS, u)
    np.testing.assert_allclose(np.asarray(new["body"]["kernel"]), 0.5)  # pulled toward 1
    np.testing.assert_allclose(np.asarray(new["head"]["kernel"]), 0.0)
