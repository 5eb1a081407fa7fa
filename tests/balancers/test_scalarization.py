"""COSMOS and PBI: objective and weights equal torchjd's scalarizers (value and autograd);
the balancer's update is the gradient of the scalarised loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

torch = pytest.importorskip("torch")
torchjd = pytest.importorskip("torchjd")


def _torch_value_and_grad(scalarizer, losses):
    values = torch.tensor(losses, requires_grad=True)
    out = scalarizer(values)
    out.backward()
    return float(out.detach()), values.grad.numpy()


def test_cosmos_matches_torchjd():
    from torchjd.scalarization import COSMOS

    rng = np.random.default_rng(0)
    worst = 0.0
    with jax.enable_x64(True):
        for _ in range(10):
            losses = rng.uniform(0.1, 5.0, size=4)
            r = rng.dirichlet(np.ones(4))
            lam = float(rng.uniform(0.0, 8.0))
            value, grad = _torch_value_and_grad(COSMOS(lam, torch.tensor(r)), losses)
            ours = mtl.weighting.cosmos_objective(losses, pref_vector=r, lambda_=lam)
            w = mtl.weighting.cosmos_weights(losses, pref_vector=r, lambda_=lam)
            np.testing.assert_allclose(ours, value, rtol=1e-10)
            np.testing.assert_allclose(w, grad, rtol=1e-9, atol=1e-12)
            worst = max(worst, float(np.max(np.abs(np.asarray(w) - grad))))
    print(f"[cosmos] largest |w - torchjd| = {worst:.2e}")


def test_pbi_matches_torchjd():
    from torchjd.scalarization import PBI

    rng = np.random.default_rng(1)
    worst = 0.0
    with jax.enable_x64(True):
        for i in range(10):
            losses = rng.uniform(0.1, 5.0, size=3)
            w = rng.dirichlet(np.ones(3))
            theta = float(rng.uniform(0.0, 10.0))
            z = None if i % 2 else rng.uniform(-1.0, 0.1, size=3)
            ref = PBI(theta, torch.tensor(w), None if z is None else torch.tensor(z))
            value, grad = _torch_value_and_grad(ref, losses)
            ours = mtl.weighting.pbi_objective(losses, pref_vector=w, theta=theta, reference=z)
            weights = mtl.weighting.pbi_weights(losses, pref_vector=w, theta=theta, reference=z)
            np.testing.assert_allclose(ours, value, rtol=1e-10)
            np.testing.assert_allclose(weights, grad, rtol=1e-9, atol=1e-12)
            worst = max(worst, float(np.max(np.abs(np.asarray(weights) - grad))))
    print(f"[pbi] largest |w - torchjd| = {worst:.2e}")


@pytest.mark.parametrize("name", ["cosmos", "pbi"])
def test_update_is_the_gradient_of_the_scalarised_loss(name):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 4, 5))
    b = rng.normal(size=(3, 4))
    pref = jnp.asarray([0.2, 0.5, 0.3])

    def losses(t):
        return 0.5 * jnp.sum((jnp.einsum("kij,j->ki", a, t) - b) ** 2, axis=1)

    with jax.enable_x64(True):
        theta = jnp.asarray(rng.normal(size=5))
        objective = getattr(mtl.weighting, f"{name}_objective")
        expected = jax.grad(lambda t: objective(losses(t), pref_vector=pref))(theta)
        values, jac = mtl.value_and_jacobian(lambda p: losses(p["t"]))({"t": theta})
        tx = getattr(mtl.balancers, name)(pref_vector=pref)
        out, _ = jax.jit(lambda s: tx.update(jac, s, task_losses=values))(tx.init(None))
        np.testing.assert_allclose(out["t"], expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["cosmos", "pbi"])
def test_presence_is_the_scalarisation_of_the_present_tasks(name):
    losses = jnp.array([1.0, jnp.nan, 2.0, 0.5])
    pref = jnp.array([0.2, 0.4, 0.1, 0.3])
    present = jnp.array([True, False, True, True])
    idx = np.array([0, 2, 3])
    weights = getattr(mtl.weighting, f"{name}_weights")
    w = weights(losses, pref_vector=pref, presence=present)
    np.testing.assert_allclose(w[idx], weights(losses[idx], pref_vector=pref[idx]), rtol=1e-6)
    assert w[1] == 0.0


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("cosmos", {"lambda_": -1.0}, "lambda_"),
        ("cosmos", {"pref_vector": jnp.array([-1.0, 2.0])}, "pref_vector"),
        ("cosmos", {"pref_vector": jnp.ones(3), "num_tasks": 2}, "num_tasks=2"),
        ("pbi", {"theta": -0.1}, "theta"),
        ("pbi", {"reference": jnp.array([jnp.inf, 0.0])}, "reference"),
    ],
)
def test_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(mtl.balancers, name)(**kwargs)
