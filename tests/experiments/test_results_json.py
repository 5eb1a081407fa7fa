"""The shared results.json writer: every number a verdict used, and honest wall times."""

import json
import time

import numpy as np
import pytest

from mtl_jax.experiments import _cli, _registry, _verdict

PART = _verdict.ClaimPart("a > b", sd=0.1)


@pytest.fixture
def flaky_experiment():
    """A resumable experiment whose first run is interrupted after 0.3 s."""
    state = {"calls": 0}

    def flaky(*, fast, out_dir, seed, resume=False):
        """A flaky experiment."""
        state["calls"] += 1
        time.sleep(0.3)
        if state["calls"] == 1:
            raise KeyboardInterrupt
        seeds = _registry.seeds_from(seed, 4)
        a, b = [0.9, 0.8, 0.85, 0.95], [0.5, 0.55, 0.45, 0.6]
        claims = [PART.test(a, b), _verdict.not_tested(_verdict.ClaimPart("c"), "omits c")]
        return _registry.ExperimentResult(
            title="flaky",
            columns=["m"],
            rows=[["a"]],
            seeds=seeds,
            metric="acc",
            per_seed={"a": a, "b": b, "one": [1.0, np.nan, 1.0, 1.0]},
            summary={"gain": (np.float32(0.1), np.array([1, 2])), "bad": float("inf")},
            claim="a beats b",
            claim_held=_verdict.claim_held(claims),
            claims=claims,
        )

    _registry.register(
        "zz-flaky",
        help="flaky",
        claim="a beats b",
        num_seeds=(4, 4),
        parts=(PART,),
        reads_data=False,
    )(flaky)
    yield state
    _registry._REGISTRY.pop("zz-flaky")


def test_results_json_has_claims_summary_provenance_and_resumed_wall_time(
    tmp_path, capsys, flaky_experiment
):
    argv = ["run", "zz-flaky", "--out", str(tmp_path), "--quiet"]
    with pytest.raises(KeyboardInterrupt):
        _cli.main(argv)
    assert not (tmp_path / "zz-flaky" / "results.json").exists()
    assert _cli.main([*argv, "--resume"]) == 0
    got = json.loads((tmp_path / "zz-flaky" / "results.json").read_text())
    # wall time counts the interrupted part too (two sleeps of 0.3 s)
    assert len(got["wall_time_parts_s"]) == 2 and got["wall_time_s"] >= 0.6
    assert got["wall_time_s"] == pytest.approx(sum(got["wall_time_parts_s"]))
    assert (
        json.loads((tmp_path / "zz-flaky" / "wall_time_parts.json").read_text())
        == (got["wall_time_parts_s"])
    )
    assert got["command"] == f"mtl-jax run zz-flaky --out {tmp_path} --quiet --resume"
    assert got["version"] and (got["git_commit"] is None or len(got["git_commit"]) == 40)
    # the claim parts, with every number of the test
    held, omitted = got["claims"]
    assert {"name", "statistic", "value", "p_value", "interval", "effect_size", "verdict"} <= set(
        held
    )
    assert held["verdict"] == "held" and held["effect_size"] == pytest.approx(0.35)
    assert held["detectable_effect"] == pytest.approx(PART.detectable(4))
    (declared,) = got["declared_parts"]
    assert declared["detectable_effect"]["4"] == pytest.approx(PART.detectable(4))
    assert omitted["verdict"] == "not tested" and omitted["reason"] == "omits c"
    assert got["claim_held"] is None and got["verdict"] == "inconclusive"
    assert got["summary"] == {"gain": [pytest.approx(0.1), [1, 2]], "bad": None}
    assert got["methods"]["a"]["std"] == pytest.approx(np.std([0.9, 0.8, 0.85, 0.95], ddof=1))
    assert got["methods"]["one"]["per_seed"][1] is None and got["methods"]["one"]["mean"] is None
    out = capsys.readouterr().out
    assert "-> INCONCLUSIVE on seeds [0, 1, 2, 3]" in out and "a > b: held (t = " in out
    # Resuming the finished run (to rewrite its outputs) adds to its time, not replaces it;
    # a fresh run starts the count again.
    assert _cli.main([*argv, "--resume"]) == 0
    again = json.loads((tmp_path / "zz-flaky" / "results.json").read_text())
    assert again["wall_time_parts_s"][:2] == got["wall_time_parts_s"]
    assert len(again["wall_time_parts_s"]) == 3
    assert _cli.main(argv) == 0
    fresh = json.loads((tmp_path / "zz-flaky" / "results.json").read_text())
    assert len(fresh["wall_time_parts_s"]) == 1


def test_help_shows_the_declared_parts_and_detectable_effects(capsys, flaky_experiment):
    assert _cli.main(["run", "zz-flaky", "--help"]) == 0
    out = capsys.readouterr().out
    assert "part: a > b (paired_t, one-sided, alpha=0.05" in out
    assert f"{PART.detectable(4):.3g} (fast)" in out


def test_writer_rejects_a_summary_verdict_that_contradicts_the_parts(tmp_path):
    claims = [PART.test([0.1, 0.2, 0.15], [0.5, 0.6, 0.55])]  # not held
    result = _registry.ExperimentResult(
        title="x", columns=[], rows=[], claim="c", claim_held=True, claims=claims
    )
    with pytest.raises(ValueError, match="disagrees with its parts"):
        _registry.write_results(result, tmp_path, name="x", form="fast", wall_time_s=1.0)
