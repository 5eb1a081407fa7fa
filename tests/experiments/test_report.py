"""``mtl-jax report``: the README's experiment table comes from recorded full runs only."""

import pathlib

from mtl_jax.experiments import _cli, _registry, _report, _verdict

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_readme_table_matches_the_recorded_full_runs(capsys):
    argv = ["report", "--check", "--results", str(ROOT / "results")]
    assert _cli.main([*argv, "--readme", str(ROOT / "README.md")]) == 0, capsys.readouterr().err


def _record(results, name, form, wall=125.0):
    part = _verdict.ClaimPart("x - y > 0")
    claims = [part.test([0.3, 0.35, 0.4, 0.32], [0.1, 0.12, 0.15, 0.11])]
    result = _registry.ExperimentResult(
        title="t",
        columns=[],
        rows=[],
        seeds=[0, 1, 2, 3],
        claim="x beats y",
        claim_held=_verdict.claim_held(claims),
        claims=claims,
    )
    out = results / name
    out.mkdir(parents=True)
    _registry.write_results(result, out, name=name, form=form, wall_time_s=wall)


def test_report_writes_and_checks_the_table(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{_report.BEGIN}\nold prose row\n{_report.END}\n\nafter\n")
    results = tmp_path / "results"
    _record(results, "reform-synthetic", "full")
    _record(results, "dsmt", "fast")  # a fast form is not a recorded full run
    argv = ["report", "--results", str(results), "--readme", str(readme)]
    assert _cli.main([*argv, "--check"]) == 1
    assert "differs" in capsys.readouterr().err
    assert _cli.main([*argv, "--write"]) == 0
    assert _cli.main([*argv, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nafter\n") and "old prose" not in text
    rows = {
        line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")
    }
    assert set(rows) == {f"`{n}`" for n in _registry.available()}
    rec = rows["`reform-synthetic`"]
    assert "x - y > 0 (paired t = " in rec and "**held**" in rec and "4 (0-3), 2.1 min" in rec
    assert _report.NO_RUN in rows["`dsmt`"] and _report.NO_RUN in rows["`pta`"]
    # a changed recorded number makes the check fail
    (results / "reform-synthetic" / "results.json").write_text(
        (results / "reform-synthetic" / "results.json").read_text().replace("125.0", "3600.0")
    )
    assert _cli.main([*argv, "--check"]) == 1


def test_report_without_markers_is_a_usage_error(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")
    argv = ["report", "--check", "--results", str(tmp_path), "--readme", str(readme)]
    assert _cli.main(argv) == 2
    assert "experiments table markers" in capsys.readouterr().err
