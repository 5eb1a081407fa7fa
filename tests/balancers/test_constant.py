"""Constant: fixed weights; the update equals torchjd's ``Constant`` aggregator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

torch = pytest.importorskip("torch")
torchjd = pytest.importorskip("torchjd")


def test_matches_torchjd_constant_aggregator_and_scalarizer(rng):
    from torchjd.aggregation import Constant
    from torchjd.scalarization import Constant as ConstantScalarizer

    c = np.array([0.3, -1.2, 2.5])
    j = rng.normal(size=(3, 7))
    tx = mtl.balancers.constant(weights=jnp.asarray(c))
    out, state = jax.jit(
        lambda s: tx.update({"w": jnp.asarray(j, jnp.float32)}, s, task_losses=jnp.ones(3))
    )(tx.init(None))
    ref = Constant(torch.tensor(c))(torch.tensor(j)).numpy()
    np.testing.assert_allclose(out["w"], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mtl.balancers.task_weights(state), c, rtol=1e-6)
    # The scalarizer's gradient w.r.t. the losses is the weight vector.
    losses = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    ConstantScalarizer(torch.tensor(c))(losses).backward()
    np.testing.assert_allclose(
        mtl.weighting.constant_weights(jnp.asarray(c)), losses.grad.numpy(), rtol=1e-6
    )


def test_absent_task_gets_zero_and_others_keep_their_weight():
    c = jnp.array([0.3, 1.2, 2.5])
    present = jnp.array([True, False, True])
    w = mtl.weighting.constant_weights(c, presence=present)
    np.testing.assert_allclose(w, [0.3, 0.0, 2.5], rtol=1e-6)
    # Inside jit, presence as data.
    f = jax.jit(lambda p: mtl.weighting.constant_weights(c, presence=p))
    np.testing.assert_allclose(f(jnp.zeros(3, bool)), np.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": jnp.ones((2, 2))}, "weights"),
        ({"weights": [1.0, float("nan")]}, "finite"),
        ({"weights": jnp.ones(3), "num_tasks": 2}, "num_tasks=2"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtl.balancers.constant(**kwargs)


def test_rejects_wrong_number_of_losses():
    tx = mtl.balancers.constant(weights=jnp.ones(3))
    with pytest.raises(ValueError, match="num_tasks=3"):
        tx.update({"w": jnp.ones((2, 4))}, tx.init(None), task_losses=jnp.ones(2))
