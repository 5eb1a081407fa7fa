"""The DSMT-Nets network: shapes, BatchNorm state, the perception blocks' convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import models


def _inputs(key, b=8, s=3, t=96):
    """``(windows [B, S, T], missing [B, S])`` with one missing stream."""
    return jax.random.normal(key, (b, s, t)), jnp.zeros((b, s)).at[0, 1].set(1.0)


def test_invalid_arguments(key):
    windows, missing = _inputs(key)
    with pytest.raises(ValueError, match="aux_mode"):
        models.DSMTNet(num_aux_tasks=2, aux_mode="x").init(key, windows, missing, train=False)
    with pytest.raises(ValueError, match="num_aux_tasks"):
        models.DSMTNet(num_aux_tasks=-1).init(key, windows, missing, train=False)


@pytest.mark.parametrize("mode,k", [("blocks", 3), ("naive", 3), ("blocks", 0)])
def test_shapes_and_state(mode, k, key):
    model = models.DSMTNet(num_aux_tasks=k, aux_mode=mode, channels=(4, 8), units=4)
    windows, missing = _inputs(key)
    # Jitted: eager init/apply dispatch hundreds of small programs (tens of seconds).
    init = jax.jit(model.init, static_argnames="train")
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    v = init(key, windows, missing, train=False)
    assert set(v) == {"params", "batch_stats"}
    logit, aux = apply(v, windows, missing, train=False)
    assert logit.shape == (8,) and aux.shape == (8, k)
    # Training mode updates the BatchNorm statistics and needs the dropout/noise RNGs.
    rngs = {"dropout": jax.random.key(1), "noise": jax.random.key(2)}
    (l2, _), upd = apply(v, windows, missing, train=True, rngs=rngs, mutable=("batch_stats",))
    assert l2.shape == (8,)
    changed = jax.tree.map(lambda a, c: bool(jnp.any(a != c)), v["batch_stats"], upd["batch_stats"])
    assert any(jax.tree.leaves(changed))
    # Blocks: one kernel per auxiliary task; naive: one shared layer with K outputs.
    if k and mode == "blocks":
        assert v["params"]["aux_dense"]["kernel"].shape[0] == k
    if k and mode == "naive":
        assert v["params"]["aux_out"]["kernel"].shape[-1] == k


@pytest.mark.parametrize("width,stride,t", [(7, 2, 128), (3, 1, 64), (7, 2, 65)])
def test_conv_matches_lax_convolution(width, stride, t, key):
    # The perception blocks' shifted-matmul convolution equals XLA's "SAME" convolution.
    from mtl_jax.models._dsmt import _Conv1D

    x = jax.random.normal(key, (4, t, 5))
    conv = _Conv1D(6, width, stride=stride)
    v = conv.init(key, x)
    ref = jax.lax.conv_general_dilated(
        x, v["params"]["kernel"], (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
    )
    np.testing.assert_allclose(conv.apply(v, x), ref, rtol=1e-5, atol=1e-5)


def test_streams_have_separate_perception_blocks(key):
    # One block per stream: changing stream 0 leaves stream 1's representation unchanged,
    # and the stacked parameters differ between streams.
    from mtl_jax.models._dsmt import _StreamEncoders

    enc = _StreamEncoders((4,), False)
    x = jax.random.normal(key, (6, 3, 96))
    v = enc.init(key, x)
    k = v["params"]["_Conv1D_0"]["kernel"]
    assert k.shape[0] == 3 and not np.allclose(k[0], k[1])
    y0 = enc.apply(v, x)
    y1 = enc.apply(v, x.at[:, 0].multiply(3.0))
    assert y0.shape == (6, 3, 4)
    np.testing.assert_allclose(y0[:, 1:], y1[:, 1:], rtol=1e-6)
    assert not np.allclose(y0[:, 0], y1[:, 0])
