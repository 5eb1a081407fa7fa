"""The by-name registry: every balancer builds from its name; the README table is its table."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELPERS = {"check_balancer", "gram_balancer", "jacobian_balancer", "loss_balancer", "task_weights"}
HELPERS |= {"make", "names", "auto_lambda_hypergradient"}
KIND = {"loss-only": "loss", "Gram": "gram", "Jacobian": "jacobian", "bilevel": "loss"}
# Exceptions to KIND by name (none: FORUM's stored direction is a loss-kind offset).
KIND_OF: dict[str, str] = {}

# The two peers' lists and the 2025 baseline set (NTKMTL, Table 1) the table must cover.
LIBMTL = (
    "EW GradNorm MGDA UW DWA GLS GradDrop PCGrad GradVac IMTL CAGrad Nash_MTL RLW MoCo "
    "Aligned_MTL DB_MTL STCH ExcessMTL FairGrad FAMO MoDo SDMGrad UPGrad"
).split()
TORCHJD = (
    "AlignedMTL CAGrad ConFIG Constant CR-MOGM DualProj ExcessMTL FairGrad GradDrop GradVac "
    "IMTL-G Krum Mean MGDA MoDo Nash-MTL PCGrad Random SDMGrad Sum TrimmedMean UPGrad "
    "COSMOS DWA FAMO GeometricMean IMTL-L PBI STCH UW PCD"
).split()


def test_every_exported_balancer_is_registered():
    exported = {n for n in mtl.balancers.__all__ if n.islower() and n not in HELPERS}
    assert exported == set(mtl.balancers.names())


@pytest.mark.parametrize("name", mtl.balancers.names())
def test_make_builds_each_name_of_its_cost_class(name):
    info = mtl.balancers.METHODS[name]
    extra = {}
    if info.cost == "bilevel":
        extra = {"task_loss_fn": lambda p, b: jnp.zeros(3), "inner_lr": 0.1}
    tx = mtl.balancers.make(name, num_tasks=3, shared=None, **extra)
    if info.cost in KIND:
        want = KIND_OF.get(name, KIND[info.cost])
        assert tx.spec.kind == want, (name, tx.spec.kind, info.cost)
    assert "Cost: " + info.cost in getattr(mtl.balancers, name).__doc__


def test_make_defaults_and_overrides():
    # constant's default weights are ones: the update equals equal weighting's.
    jac = {"w": jnp.array([[1.0, 2.0], [3.0, 5.0]])}
    losses = jnp.array([1.0, 2.0])
    outs = []
    for name, kw in [
        ("constant", {}),
        ("equal_weighting", {}),
        ("constant", {"weights": [2.0, 0.0]}),
    ]:
        tx = mtl.balancers.make(name, num_tasks=2, **kw)
        upd, _ = tx.update(jac, tx.init({"w": jnp.zeros(2)}), task_losses=losses)
        outs.append(np.asarray(upd["w"]))
    np.testing.assert_allclose(outs[0], [4.0, 7.0])
    np.testing.assert_allclose(outs[1], [4.0, 7.0])
    np.testing.assert_allclose(outs[2], [2.0, 4.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "nope", "num_tasks": 2}, "name must be one of"),
        ({"name": "mgda", "num_tasks": 0}, "num_tasks must be a positive int, got 0"),
        ({"name": "mgda", "num_tasks": True}, "num_tasks must be a positive int"),
        ({"name": "auto_lambda", "num_tasks": 2}, "auto_lambda needs task_loss_fn= and inner_lr="),
        ({"name": "moml", "num_tasks": 2}, "moml needs task_loss_fn= and inner_lr="),
        ({"name": "forum", "num_tasks": 2, "inner_lr": 0.1}, "forum needs task_loss_fn="),
    ],
)
def test_make_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtl.balancers.make(**kwargs)


def _readme_table():
    text = (ROOT / "README.md").read_text()
    body = text.split("<!-- methods-table -->")[1].split("<!-- /methods-table -->")[0]
    rows = [r for r in body.strip().splitlines()[2:]]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def test_readme_method_table_is_the_registry():
    rows = _readme_table()
    assert [r[0].strip("`") for r in rows] == list(mtl.balancers.names())
    for r in rows:
        info = mtl.balancers.METHODS[r[0].strip("`")]
        assert r[1] == info.cost and r[2] == info.needs, r
        assert r[4] == (info.libmtl or "—") and r[5] == (info.torchjd or "—"), r
        url = info.paper.partition(", ")[2]
        assert url in r[3], r


def _covered(column):
    names = set()
    for info in mtl.balancers.METHODS.values():
        names |= {n.strip() for n in getattr(info, column).split(",") if n.strip()}
    return names


def test_both_peers_lists_are_covered():
    assert set(LIBMTL) <= _covered("libmtl"), set(LIBMTL) - _covered("libmtl")
    # the bilevel methods of LibMTL's trainer
    assert {"Auto-Lambda", "MOML", "FORUM"} <= _covered("libmtl")
    assert set(TORCHJD) <= _covered("torchjd"), set(TORCHJD) - _covered("torchjd")
    assert len(LIBMTL) == 23


def test_every_method_of_the_installed_torchjd_is_covered():
    """Each aggregator, weighting and scalarizer the installed torchjd exports has a row."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    scalarization = pytest.importorskip("torchjd.scalarization")
    bases = {"Aggregator", "WeightedAggregator", "GramianWeightedAggregator", "Weighting"}
    bases |= {"Scalarizer"}
    exported = set()
    for module in (aggregation, scalarization):
        for name in getattr(module, "__all__", dir(module)):
            if name.startswith("_") or name in bases or not isinstance(getattr(module, name), type):
                continue
            exported.add(name.removesuffix("Weighting"))
    key = lambda n: n.replace("-", "").replace("_", "").lower()
    ours = {key(n) for n in _covered("torchjd")}
    missing = sorted(n for n in exported if key(n) not in ours)
    assert not missing, missing
