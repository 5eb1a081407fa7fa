"""The transfer reproductions assert their papers' claims over seeds, with margins.

Fast form in CI, ``--full-repro`` for full size. Margins are set below the effects
measured on the fast form at ``--seed`` 0, 100 and 200 by more than their spread
over those runs (the numbers are in each test's comment).
"""

import numpy as np
import pytest

from mtl_jax.experiments import _verdict, get
from mtl_jax.experiments._registry import seeds_from


def _check_result(res, seed=0):
    assert res.files[0].exists() and res.files[0].stat().st_size > 1000
    assert res.seeds == seeds_from(seed, len(res.seeds))
    assert res.metric and res.claim and res.claims
    # the summary verdict is the declared parts' verdicts, each a statistic
    assert res.claim_held is _verdict.claim_held(res.claims)
    for part in res.claims:
        assert part["verdict"] in _verdict.VERDICTS and part["statistic"] == "paired_t"
    for values in res.per_seed.values():
        assert len(values) == len(res.seeds) and np.all(np.isfinite(values))


def test_l2sp_split_is_a_new_label_set():
    """Source and target tasks share no label and no image; the target keeps test images."""
    from mtl_jax.experiments import _data, transfer_l2sp

    labels = np.asarray(_data.digits(quiet=True).labels)
    src, train, test = transfer_l2sp.transfer_split(labels, per_class=10, seed=3)
    assert set(labels[src]) == set(transfer_l2sp.SOURCE_CLASSES) == {0, 1, 2, 3, 4}
    assert set(labels[train]) == set(labels[test]) == set(transfer_l2sp.TARGET_CLASSES)
    assert not set(transfer_l2sp.SOURCE_CLASSES) & set(transfer_l2sp.TARGET_CLASSES)
    assert not (set(src) & set(train) or set(src) & set(test) or set(train) & set(test))
    assert np.bincount(labels[train], minlength=10)[5:].tolist() == [10] * 5
    assert len(src) + len(train) + len(test) == len(labels)  # every image used once
    with pytest.raises(ValueError, match="per_class must be"):
        transfer_l2sp.transfer_split(labels, per_class=0, seed=3)


def test_l2sp_probe_freezes_features_and_sp_moves_them():
    """A lane with ``freeze=1`` trains only the head; L2-SP's lane moves the features too."""
    import jax
    import jax.numpy as jnp

    from mtl_jax import transfer
    from mtl_jax.experiments import transfer_l2sp

    model = transfer_l2sp.DigitsCNN(5)
    x = jax.random.uniform(jax.random.key(0), (10, 8, 8, 1))
    y = jnp.arange(10) % 5
    anchor = model.init(jax.random.key(1), x[:1])
    start = transfer.reinit_head(
        anchor, model.init(jax.random.key(2), x[:1]), head=transfer.path_matches("head")
    )
    is_pre = transfer.path_matches("conv|fc")
    lane = jax.jit(transfer_l2sp._finetune_lane(model, is_pre, learning_rate=0.05, num_iters=3))
    l2sp = jax.nn.one_hot(1, 5)
    for freeze in (1.0, 0.0):
        out = lane(start, anchor, jax.tree.map(jnp.ones_like, anchor), x, y, l2sp, freeze)
        for k in ("conv1", "conv2", "fc"):
            same = np.array_equal(out["params"][k]["kernel"], anchor["params"][k]["kernel"])
            assert same == (freeze == 1.0), (k, freeze)
        assert not np.array_equal(
            out["params"]["head"]["kernel"], start["params"]["head"]["kernel"]
        )


@pytest.mark.reproduction
def test_l2sp_reproduction(repro_fast, tmp_path):
    import json

    from mtl_jax.experiments import transfer_l2sp
    from mtl_jax.experiments._registry import write_results

    res = get("transfer-l2sp").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    methods = list(transfer_l2sp.METHODS)
    assert methods == ["scratch", "linear probe", "L2", "L2-SP", "L2-SP-Fisher", "L1-SP", "GL-SP"]
    assert [r[0] for r in res.rows] == methods
    s = res.summary
    # a new label set: disjoint classes, a fresh 5-way head, the stated amount of target data
    assert not set(s["source_classes"]) & set(s["target_classes"])
    assert s["head_outputs"] == 5 and s["target_train_images"] == 5 * s["per_class"]
    assert all(n > 500 for n in s["target_test_images"])
    # every verdict is the declared statistic on the recorded per-seed numbers
    acc = {k: np.asarray(v) for k, v in res.per_seed.items()}
    assert [c["name"] for c in res.claims] == [p.name for p in transfer_l2sp.PARTS]
    for part, name in zip(transfer_l2sp.PARTS, transfer_l2sp.SP_METHODS):
        diff = acc[name] - acc["L2"]
        np.testing.assert_allclose(s["difference_from_L2"][name], diff)
        got = next(c for c in res.claims if c["name"] == part.name)
        untestable = got.get("reason") if repro_fast else None
        assert got == part.test(diff, untestable=untestable)
    if repro_fast:  # shortened training on 3 seeds cannot decide the claim
        assert all(c["verdict"] == "inconclusive" for c in res.claims)
        assert res.claim_held is None
    path = write_results(res, tmp_path, name="transfer-l2sp", form="fast", wall_time_s=0.0)
    got = json.loads(path.read_text())
    assert set(got["methods"]) == set(methods)
    for m in methods:
        assert got["methods"][m]["per_seed"] == pytest.approx(res.per_seed[m])
    assert [c["verdict"] for c in got["claims"]] == [c["verdict"] for c in res.claims]
    assert len(got["declared_parts"]) == 4


@pytest.mark.reproduction
def test_curriculum_reproduction(repro_fast, tmp_path):
    res = get("transfer-curriculum").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    early = {k: np.asarray(v) for k, v in res.per_seed.items()}
    # Anti-curriculum is the slowest early. Seed means of curriculum − anti at a
    # quarter of training on the fast form, --seed 0 / 100 / 200: +0.18 / +0.09 /
    # +0.16 (spread 0.05); margin 0.05. vanilla − anti: +0.17 / +0.11 / +0.14 and
    # random − anti: +0.13 / +0.10 / +0.13 (spread 0.03); margin 0.04.
    assert (early["curriculum"] - early["anti"]).mean() > 0.05
    for name in ("vanilla", "random"):
        assert early[name].mean() > early["anti"].mean() + 0.04, name
    # Curriculum vs vanilla early is within seed noise here (+0.012 / −0.024 /
    # +0.018: not reproduced, see the report). The final accuracy of the
    # curriculum was above vanilla's on all three runs (+0.011 / +0.012 / +0.006),
    # too little to assert a gain; what is asserted is "ends at least as well".
    final = res.summary
    assert final["curriculum"] > final["vanilla"] - 0.03


@pytest.mark.reproduction
def test_l2t_reproduction(repro_fast, tmp_path):
    res = get("transfer-l2t").fn(fast=repro_fast, out_dir=tmp_path, seed=0)
    _check_result(res)
    acc = {k: np.asarray(v) for k, v in res.per_seed.items()}
    s = res.summary
    assert s["fit_corr"] > 0.0  # the reflection function learned something
    # Transfer with L2T's map beats the target-only classifier. Fast form (24 test
    # pairs), --seed 0 / 100 / 200: +0.160 / +0.086 / +0.091 (spread 0.04); margin 0.05.
    assert (acc["L2T"] - acc["target only"]).mean() > 0.05
    # The paper's claim, L2T above every base algorithm, is not reproduced here:
    # L2T − PCA was +0.017 / −0.010 / −0.041 and L2T − SA +0.086 / +0.013 / +0.043
    # (see the report). What is asserted is that L2T stays close to the best base.
    best_base = max(acc[k].mean() for k in ("PCA", "TCA", "SA"))
    assert acc["L2T"].mean() > best_base - 0.08
