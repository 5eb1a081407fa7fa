"""FAMO: weights and logit updates against a torch re-computation of the authors' code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl


def _torch_famo(losses_seq, lr, gamma):
    """The authors' FAMO (Cranial-XIX/FAMO, methods/weight_methods.py) re-run in torch."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    k = losses_seq.shape[1]
    w = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr, weight_decay=gamma)
    weights = []
    for t in range(len(losses_seq)):
        losses = torch.tensor(losses_seq[t], dtype=torch.float64, requires_grad=True)
        z = F.softmax(w, -1)
        d = losses + 1e-8
        c = (z / d).sum().detach()
        loss = (d.log() * z / c).sum()
        (g,) = torch.autograd.grad(loss, losses)
        weights.append(g.numpy())
        if t + 1 < len(losses_seq):
            curr = torch.tensor(losses_seq[t + 1], dtype=torch.float64)
            delta = (losses.detach() + 1e-8).log() - (curr + 1e-8).log()
            (dw,) = torch.autograd.grad(F.softmax(w, -1), w, grad_outputs=delta)
            opt.zero_grad()
            w.grad = dw
            opt.step()
    return np.stack(weights), w.detach().numpy()


def test_matches_torch_reference_on_scripted_losses():
    seq = np.array(
        [[1.0, 2.0, 3.0], [0.5, 1.9, 2.0], [0.3, 1.8, 1.5], [0.2, 1.75, 1.0], [0.15, 1.7, 0.8]]
    )
    ref_w, ref_logits = _torch_famo(seq, lr=0.025, gamma=0.001)
    tx = mtl.balancers.famo(num_tasks=3, learning_rate=0.025, gamma=0.001)
    state = tx.init(None)
    fn = jax.jit(tx.spec.loss_weights)
    for t, row in enumerate(seq):
        w, state = fn(jnp.asarray(row, jnp.float32), state)
        np.testing.assert_allclose(w, ref_w[t], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(state.logits, ref_logits, rtol=1e-4, atol=1e-6)
    # Task 1's loss fell least: its logit grew, the others' shrank.
    assert np.argmax(state.logits) == 1


def test_first_logit_update_by_hand():
    # One Adam step from zero moves every logit by -lr·sign(δ) (Adam's first step).
    l0, l1 = np.array([1.0, 1.0]), np.array([0.5, 1.0])
    tx = mtl.balancers.famo(num_tasks=2, learning_rate=0.1, gamma=0.0)
    state = tx.init(None)
    _, state = tx.spec.loss_weights(jnp.asarray(l0), state)
    np.testing.assert_allclose(state.logits, 0.0)
    _, state = tx.spec.loss_weights(jnp.asarray(l1), state)
    delta = np.log(l0) - np.log(l1)
    z = np.full(2, 0.5)
    d = z * (delta - z @ delta)  # [log2/4, −log2/4]
    np.testing.assert_allclose(mtl.weighting.famo_logit_grad(jnp.zeros(2), l0, l1), d, rtol=1e-5)
    np.testing.assert_allclose(state.logits, -0.1 * np.sign(d), rtol=1e-4)


def test_weights_are_gradient_of_scaled_log_objective():
    xi = jnp.array([0.3, -0.2, 0.1])
    losses = jnp.array([0.5, 2.0, 4.0])
    z = jax.nn.softmax(xi)
    c = jnp.sum(z / losses)
    g = jax.grad(lambda ls: jnp.sum(z * jnp.log(ls)) / c)(losses)
    w = mtl.weighting.famo_weights(xi, losses, eps=0.0 + 1e-30)
    np.testing.assert_allclose(w, g, rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-6)


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="learning_rate"):
        mtl.balancers.famo(num_tasks=2, learning_rate=0.0)
    with pytest.raises(ValueError, match="gamma"):
        mtl.balancers.famo(num_tasks=2, gamma=-1.0)
    with pytest.raises(ValueError, match="min_losses"):
        mtl.balancers.famo(num_tasks=2, min_losses=jnp.zeros(3))
