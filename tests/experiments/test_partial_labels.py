"""The packaged experiment ``mtl-jax run partial-labels``: naive masked mean vs presence."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import mtl_jax as mtl
from mtl_jax.experiments import _cli, partial_labels
from mtl_jax.experiments._registry import get


def test_label_masks_label_each_task_on_its_fraction():
    mask = partial_labels.label_masks(1000, 4, seed=3)
    assert mask.shape == (1000, 4) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(0), [1000, 100, 300, 1000])
    # Drawn independently per task and per seed.
    assert not np.array_equal(mask, partial_labels.label_masks(1000, 4, seed=4))
    np.testing.assert_array_equal(mask, partial_labels.label_masks(1000, 4, seed=3))
    with pytest.raises(ValueError, match="num_examples"):
        partial_labels.label_masks(0, 4, seed=0)


def _setup():
    """A tiny HPS model and a batch of 4 in which task 1 has no label."""
    import flax.linen as nn

    model = mtl.models.HardParameterSharing(nn.Dense(8), num_tasks=2, head_features=3)
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=(4, 5)), jnp.float32)
    params = model.init(jax.random.key(0), x)
    batch = {
        "x": x,
        "y": jnp.asarray(r.integers(0, 3, size=(4, 2))),
        "mask": jnp.array([[1, 0], [1, 0], [0, 0], [1, 0]], bool),
    }
    return model, params, batch


def _one_step(model, params, batch, variant):
    shared = model.shared_mask(params)
    step = mtl.training.make_train_step(
        partial_labels.make_loss_fn(model, variant),
        mtl.balancers.mgda(num_tasks=2, shared=shared),
        optax.sgd(0.1),
    )
    state, metrics = step(step.init(params), batch)
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), params, state.params)
    return metrics, moved


def test_mgda_sees_the_absent_task_only_in_the_naive_variant():
    """Naive: the absent task is 'present' with a zero gradient, so MGDA's min-norm point is
    0 and the shared trunk does not move. Presence-aware: the absent task gets weight 0 and
    the trunk follows the one present task."""
    model, params, batch = _setup()
    naive, moved_naive = _one_step(model, params, batch, "naive")
    aware, moved_aware = _one_step(model, params, batch, "presence")
    trunk = lambda moved: jax.tree_util.tree_leaves(moved["params"]["encoder"])
    np.testing.assert_array_equal(naive["present"], [True, True])
    np.testing.assert_array_equal(aware["present"], [True, False])
    # Same losses in both variants (0 for the absent task), different balancer problems.
    np.testing.assert_allclose(naive["losses"], aware["losses"], rtol=1e-6)
    assert float(naive["losses"][1]) == 0.0
    np.testing.assert_allclose(naive["weights"], [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(aware["weights"], [1.0, 0.0], atol=1e-6)
    assert not any(trunk(moved_naive)) and all(trunk(moved_aware))
    # The experiment's one-program form picks the variant from the batch's "aware" flag.
    for flag, ref in ((False, naive), (True, aware)):
        b = dict(batch, aware=jnp.full((4,), flag))
        got, _ = _one_step(model, params, b, "batch")
        np.testing.assert_array_equal(got["present"], ref["present"])
        np.testing.assert_allclose(got["weights"], ref["weights"], atol=1e-6)
    with pytest.raises(ValueError, match="variant"):
        partial_labels.make_loss_fn(model, "masked")


def test_claim_is_a_declared_part_of_the_shared_verdict():
    """The claim goes through the experiments' shared verdict: declared, paired, one-sided."""
    (declared,) = get("partial-labels").parts
    assert declared is partial_labels.PART and declared.paired
    assert declared.statistic == "paired_t" and declared.alternative == "greater"
    naive = np.array([0.50, 0.52, 0.47, 0.55, 0.51])
    better = naive + np.array([0.03, 0.05, 0.02, 0.04, 0.06])
    d = better - naive
    t = d.mean() / (d.std(ddof=1) / np.sqrt(d.size))
    out = partial_labels.PART.test(better, naive)
    np.testing.assert_allclose(out["value"], t, rtol=1e-10)
    np.testing.assert_allclose(out["p_value"], stats.t.sf(t, d.size - 1), rtol=1e-8)
    assert out["verdict"] == "held"
    assert partial_labels.PART.test(naive, better)["verdict"] == "not held"


@pytest.mark.reproduction
def test_fast_form_runs_from_the_cli(tmp_path, capsys):
    """``mtl-jax run partial-labels --seed 3`` end to end: results.json with every field, PNG.

    The fast form as shipped: MGDA on both datasets, 3 seeds.
    """
    assert _cli.main(["run", "partial-labels", "--seed", "3", "--out", str(tmp_path)]) == 0
    out = tmp_path / "partial-labels"
    assert (out / "partial_labels.png").stat().st_size > 0
    payload = json.loads((out / "results.json").read_text())
    n_seeds = partial_labels.FAST[1]
    assert payload["seeds"] == list(range(3, 3 + n_seeds)) and payload["form"] == "fast"
    tasks = {
        "multi_digits": ("left", "right"),
        "digits_attributes": ("odd", "ge5", "prime", "loop"),
    }
    for ds, names in tasks.items():
        for b in partial_labels.FAST_BALANCERS:
            for v in partial_labels.VARIANTS:
                cell = f"{ds}/{b}/{v}"
                m = payload["methods"][cell]
                assert len(m["per_seed"]) == n_seeds and 0.0 <= m["mean"] <= 1.0, cell
                assert m["std"] >= 0.0
                per_task = [payload["methods"][f"{cell}/{t}"]["per_seed"] for t in names]
                np.testing.assert_allclose(np.mean(per_task, axis=0), m["per_seed"], rtol=1e-9)
    assert payload["claim"] == partial_labels.CLAIM
    (part,) = payload["claims"]
    for field in ("statistic", "value", "p_value", "interval", "effect_size", "alpha"):
        assert part[field] is not None, field
    # The fast form cannot decide the claim (the full form's effect depends on training
    # length): it records the test and says so.
    assert part["verdict"] == "inconclusive" and "fast form" in part["reason"]
    assert payload["claim_held"] is None
    assert payload["verdict"] == "inconclusive"  # not "not tested"
    assert "-> INCONCLUSIVE on seeds" in capsys.readouterr().out
    test = payload["summary"]
    assert partial_labels.FAST_BALANCERS == ("mgda",) and test["other_balancers"] == {}
    for ds in tasks:  # the secondary per-dataset tests
        assert test["per_dataset"][ds]["mgda"]["verdict"] in ("held", "not held", "inconclusive")
    assert test["label_fractions"]["multi_digits"] == {"left": 1.0, "right": 0.1}
    # The sparse task really is absent from many batches of 8: 0.9**8 = 0.43.
    assert 0.3 < test["absent_rate"]["multi_digits"]["right"] < 0.55
