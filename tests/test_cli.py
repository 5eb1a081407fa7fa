"""The ``mtl-jax`` console script and its default experiment."""

import copy
import inspect
import io
import json
import re
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

from mtl_jax.experiments import _cli, _registry, available


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "mtl_jax.experiments._cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "run" in out and "list" in out


def test_list_names_default(capsys):
    assert _cli.main(["list"]) == 0
    assert _cli.DEFAULT_EXPERIMENT in capsys.readouterr().out
    assert _cli.DEFAULT_EXPERIMENT in available()


def test_unknown_experiment_is_a_one_line_usage_error(capsys):
    assert _cli.main(["run", "no-such-experiment"]) == 2  # the script's exit status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err  # no traceback
    assert lines[0].startswith("mtl-jax: error: unknown experiment 'no-such-experiment'")
    assert "available: " in lines[0] and _cli.DEFAULT_EXPERIMENT in lines[0]
    assert captured.out == ""


def test_unknown_experiment_help_is_a_usage_error(capsys):
    assert _cli.main(["run", "no-such", "--help"]) == 2
    assert "unknown experiment 'no-such'" in capsys.readouterr().err


def test_run_name_help_describes_the_experiment(capsys):
    assert _cli.main(["run", _cli.DEFAULT_EXPERIMENT, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the description is wrapped
    exp = available()[_cli.DEFAULT_EXPERIMENT]
    assert out.startswith(f"usage: mtl-jax run {_cli.DEFAULT_EXPERIMENT}")
    assert exp.summary in out and "GradNorm" in exp.summary
    for option in ("--full", "--seed", "--out", "--resume", "--quiet"):
        assert option in out
    fast, full = exp.num_seeds
    assert f"S, ..., S+{fast - 1} in the fast form ({fast} seeds)" in out
    assert f"claim checked: {exp.claim}" in out


def _help(name, capsys) -> tuple[str, set[str]]:
    """``mtl-jax run NAME --help`` as one line of text, and the options it lists."""
    assert _cli.main(["run", name, "--help"]) == 0
    out = capsys.readouterr().out
    listed = set(re.findall(r"^\s+(--[a-z-]+)", out.split("\noptions:\n")[1], re.M))
    return " ".join(out.split()), listed - {"--help"}


# What each packaged experiment takes beyond --full, --seed, --out and --quiet, written out
# here by hand as an independent check of what the CLI derives from the declarations.
EXTRA_OPTIONS = {
    "architectures": {"--data-dir"},
    "balancers": {"--balancer", "--data-dir"},
    "celeba": {"--balancer", "--data-dir"},
    "dsmt": {"--data-dir"},
    "label-shift-digits": {"--data-dir"},
    "mstn-digits": {"--data-dir"},
    "partial-labels": {"--data-dir"},
    "pta": {"--data-dir"},
    "reform-synthetic": set(),  # synthetic data, read from no cache
    "toy-regression": {"--resume", "--data-dir"},
    "transfer-curriculum": {"--data-dir"},
    "transfer-l2sp": {"--data-dir"},
    "transfer-l2t": {"--data-dir"},
}
COMMON_OPTIONS = {"--full", "--seed", "--out", "--quiet"}


def test_every_experiment_is_described_in_the_table():
    assert set(EXTRA_OPTIONS) == set(available())


@pytest.mark.parametrize("name", sorted(EXTRA_OPTIONS))
def test_help_lists_exactly_the_options_taken_a_claim_and_the_seeds(name, capsys):
    exp = available()[name]
    out, listed = _help(name, capsys)
    assert listed == COMMON_OPTIONS | EXTRA_OPTIONS[name], listed
    # Every optional parameter of the function is an option, and every option it takes
    # beyond the common ones (and --data-dir, which the CLI itself applies) is a parameter.
    params = set(inspect.signature(exp.fn).parameters) - {"fast", "out_dir", "seed"}
    assert {"--" + p.replace("_", "-") for p in params} <= listed
    assert listed - COMMON_OPTIONS - {"--data-dir"} <= {"--" + p for p in params}
    # A claim line, the seeds of both forms, and a summary that is whole sentences.
    assert f"claim checked: {exp.claim}" in out and exp.claim.strip()
    assert "(not declared)" not in out
    fast, full = exp.num_seeds
    assert f"S, ..., S+{fast - 1} in the fast form ({fast} seed" in out
    assert f"S, ..., S+{full - 1} with --full ({full} seed" in out
    assert exp.summary in out
    assert exp.summary.count("(") == exp.summary.count(")"), exp.summary
    assert exp.summary.rstrip().endswith((".", ")")), exp.summary
    # Each option it does not take, and a typo, give this experiment's usage and status 2.
    not_taken = {"--resume", "--balancer", "--data-dir"} - listed
    for bad in [*sorted(not_taken), "--sead"]:
        assert _cli.main(["run", name, bad, "3"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: mtl-jax run {name} "), err
        assert f"unrecognized arguments: {bad}" in err, err


def test_options_before_the_name_are_a_run_usage_error(capsys):
    assert _cli.main(["run", "--seed", "3", "toy-regression"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mtl-jax run NAME") and "name comes first" in err


def test_register_needs_a_claim_seeds_and_known_parameters():
    def fn(*, fast, out_dir, seed):
        """An experiment."""

    def odd(*, fast, out_dir, seed, steps=3):
        """An experiment with a parameter the CLI cannot set."""

    with pytest.raises(ValueError, match="claim must be a non-empty sentence; got ''"):
        _registry.register("zz-x", help="x", claim="", num_seeds=(1, 2))(fn)
    with pytest.raises(ValueError, match=r"num_seeds must be \(fast, full\).*got \(0, 2\)"):
        _registry.register("zz-x", help="x", claim="c", num_seeds=(0, 2))(fn)
    with pytest.raises(ValueError, match=r"unknown \['steps'\]"):
        _registry.register("zz-x", help="x", claim="c", num_seeds=(1, 2))(odd)
    with pytest.raises(ValueError, match=r"reads data .* must take \('data_dir', 'quiet'\)"):
        _registry.register("zz-x", help="x", claim="c", num_seeds=(1, 2))(fn)
    with pytest.raises(ValueError, match="takes data_dir but is declared reads_data=False"):
        _registry.register("zz-x", help="x", claim="c", num_seeds=(1, 2), reads_data=False)(
            lambda *, fast, out_dir, seed, data_dir=None, quiet=False: None
        )
    with pytest.raises(TypeError):
        _registry.register("zz-x", help="x")(fn)  # claim and num_seeds are required
    assert "zz-x" not in _registry._REGISTRY


@pytest.fixture
def dummy_experiments():
    """Registers two tiny experiments (one resumable) and removes them afterwards."""
    calls = []

    def plain(*, fast, out_dir, seed):
        """A plain experiment."""
        calls.append({"fast": fast, "seed": seed})
        seeds = _registry.seeds_from(seed, 2)
        return _registry.ExperimentResult(
            title="plain",
            columns=["method"],
            rows=[["a"]],
            seeds=seeds,
            metric="m",
            per_seed={"a": [float(s) for s in seeds]},
            claim="a is a",
            claim_held=True,
        )

    def resumable(*, fast, out_dir, seed, resume=False):
        """A resumable experiment."""
        calls.append({"resume": resume})
        return plain(fast=fast, out_dir=out_dir, seed=seed)

    decl = {"claim": "a is a", "num_seeds": (2, 2), "reads_data": False}
    _registry.register("zz-plain", help="plain", **decl)(plain)
    _registry.register("zz-resumable", help="resumable", **decl)(resumable)
    yield calls
    for name in ("zz-plain", "zz-resumable"):
        _registry._REGISTRY.pop(name)


def test_seed_changes_the_seeds_and_results_json(tmp_path, capsys, dummy_experiments):
    assert _cli.main(["run", "zz-plain", "--seed", "5", "--out", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "zz-plain" / "results.json").read_text())
    assert got["seeds"] == [5, 6] and got["methods"]["a"]["per_seed"] == [5.0, 6.0]
    assert dummy_experiments == [{"fast": True, "seed": 5}]
    out = capsys.readouterr().out
    assert "claim: a is a" in out and "HELD on seeds [5, 6]" in out


def test_resume_is_passed_only_to_experiments_that_take_it(tmp_path, capsys, dummy_experiments):
    assert _cli.main(["run", "zz-plain", "--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mtl-jax run zz-plain")
    assert "unrecognized arguments: --resume" in err
    assert dummy_experiments == []  # the experiment never started
    assert _cli.main(["run", "zz-resumable", "--resume", "--out", str(tmp_path)]) == 0
    assert dummy_experiments[0] == {"resume": True}
    assert available()["zz-resumable"].supports_resume
    assert not available()["zz-plain"].supports_resume


class _TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert list(_registry.progress(range(3), "train")) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""
    tty = _TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert list(_registry.progress(range(3), "train")) == [0, 1, 2]
    assert "train:" in tty.getvalue() and "/3" in tty.getvalue()
    quiet = _TTY()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert list(_registry.progress(range(3), "train", quiet=True)) == [0, 1, 2]
    assert quiet.getvalue() == ""


class _Killed(Exception):
    pass


class _MemoryCheckpointer:
    """An in-memory stand-in with ``mtl_jax.training.Checkpointer``'s interface."""

    store: ClassVar[dict] = {}
    kill_after: ClassVar[int | None] = None  # raise _Killed right after saving this step
    log: ClassVar[list] = []  # (directory, step) of every save

    def __init__(self, directory, *, save_every, keep=2):
        self.directory, self.save_every, self.keep = str(directory), save_every, keep

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    def restore_latest(self, template):
        saved = self.store.get(self.directory)
        if not saved:
            return None
        _, state, extra = saved[-1]
        return state, copy.deepcopy(extra)

    def save(self, step, state, *, extra=None, force=False):
        if force or step % self.save_every == 0:
            saved = self.store.setdefault(self.directory, [])
            saved.append((step, state, copy.deepcopy(extra)))
            self.log.append((self.directory, step))
            del saved[: -self.keep]
            if step == type(self).kill_after:
                raise _Killed(step)


def test_toy_regression_resumes_bit_identically(tmp_path, monkeypatch):
    from mtl_jax.experiments import toy_regression

    monkeypatch.setattr(toy_regression, "checkpointer", _MemoryCheckpointer)
    monkeypatch.setattr(toy_regression, "METHODS", ("uncertainty_weighting",))
    monkeypatch.setattr(toy_regression, "FAST", (100, 1))
    monkeypatch.setattr(toy_regression, "CHUNK", 25)
    monkeypatch.setattr(toy_regression, "SAVE_EVERY", 50)
    monkeypatch.setattr(_MemoryCheckpointer, "store", {})
    monkeypatch.setattr(_MemoryCheckpointer, "log", [])
    whole = toy_regression.run(fast=True, out_dir=tmp_path / "a", seed=0)

    monkeypatch.setattr(_MemoryCheckpointer, "kill_after", 50)
    with pytest.raises(_Killed):
        toy_regression.run(fast=True, out_dir=tmp_path / "b", seed=0)
    (saved,) = [v for k, v in _MemoryCheckpointer.store.items() if "/b/" in k]
    assert [s for s, _, _ in saved] == [50]
    monkeypatch.setattr(_MemoryCheckpointer, "kill_after", None)
    del _MemoryCheckpointer.log[:]
    resumed = toy_regression.run(fast=True, out_dir=tmp_path / "b", seed=0, resume=True)
    assert [step for _, step in _MemoryCheckpointer.log] == [100]  # continued from step 50
    assert [s for s, _, _ in saved] == [50, 100]
    assert resumed.per_seed == whole.per_seed  # bit-identical final test losses
    np.testing.assert_array_equal(
        resumed.summary["final_weights"]["uncertainty_weighting"],
        whole.summary["final_weights"]["uncertainty_weighting"],
    )


@pytest.mark.reproduction
def test_default_experiment_checks_gradnorm_claims(tmp_path, monkeypatch, capsys, repro_fast):
    """The main job, through the CLI: GradNorm beats EW and lifts the σ=1 task's weight."""
    from mtl_jax.experiments import toy_regression

    if repro_fast:  # a shorter run than the CLI's fast form keeps the suite quick
        monkeypatch.setattr(toy_regression, "FAST", (400, 2))
        monkeypatch.setattr(
            toy_regression, "METHODS", ("equal_weighting", "uncertainty_weighting", "gradnorm")
        )
    results = []
    make_result = toy_regression._result
    monkeypatch.setattr(
        toy_regression, "_result", lambda *a: results.append(make_result(*a)) or results[-1]
    )
    argv = ["run", "toy-regression", "--seed", "3", "--out", str(tmp_path), "--quiet"]
    assert _cli.main(argv if repro_fast else [*argv, "--full"]) == 0
    out = capsys.readouterr().out
    got = json.loads((tmp_path / "toy-regression" / "results.json").read_text())
    n = 2 if repro_fast else toy_regression.FULL[1]
    assert got["seeds"] == list(range(3, 3 + n))
    assert got["claim"] == toy_regression.CLAIM and "claim: " + toy_regression.CLAIM in out
    methods = got["methods"]
    assert {"equal_weighting", "uncertainty_weighting", "gradnorm"} <= methods.keys()
    assert all(len(m["per_seed"]) == n for m in methods.values())
    # GradNorm's task-normalised test loss is below equal weighting's by a margin
    # wider than the seed-to-seed spread (measured at 400 steps on seeds 10-15: EW - GN =
    # 1.16 ± 0.11, GN's w(σ=1) = 7.8-7.9).
    gn, ew = methods["gradnorm"]["per_seed"], methods["equal_weighting"]["per_seed"]
    assert np.mean(gn) < np.mean(ew) - 0.3, (gn, ew)
    assert all(g < e for g, e in zip(gn, ew))
    # The σ=1 task's weight rises from 1 to the largest weight under GradNorm.
    for w in results[0].summary["final_weights"]["gradnorm"]:
        assert w[0] > 2.0 and int(np.argmax(w)) == 0
    assert "Σ L_i/L_i(0)" in out and (tmp_path / "toy-regression" / "toy_regression.png").exists()
    assert (tmp_path / "toy-regression" / "toy_regression.png").stat().st_size > 10_000
    # results.json holds both parts of the verdict, the σ=1 weight condition included
    loss, weight = got["claims"]
    assert loss["name"] == toy_regression.PARTS[0].name and loss["statistic"] == "paired_t"
    assert loss["effect_size"] == pytest.approx(np.mean(gn) - np.mean(ew))
    assert weight["statistic"] == "sign" and weight["n"] == n
    if repro_fast:  # 2 seeds: a sign test cannot reach 5 %, so no verdict from it
        assert weight["verdict"] == "inconclusive" and got["claim_held"] is None
    assert len(got["summary"]["final_weights_sigma1_margin"]) == n
    # one sd formula (ddof=1) in the printed table and in results.json
    row = {r[0]: r for r in results[0].rows}["gradnorm"]
    assert row[3] == pytest.approx(methods["gradnorm"]["std"], rel=1e-9)
