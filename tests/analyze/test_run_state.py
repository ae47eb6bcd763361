"""Cut, still recording and degraded runs are named by every sloan command that reads runs:
one warning line each on stderr, and their state in the runs view and the JSON outputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyze.cli import main
from analyze.session import open_runs, run_warnings
from runfmt.manifest import hold_recording
from tests.support.lab_run import make_run
from tests.support.runs import command_args

COMMANDS = ("sql", "correlate", "slo", "attribute", "score", "report", "repro", "compare", "gate")
SHED = [{"step": "raise_thresholds", "detail": "latency thresholds x4", "level": 1},
        {"step": "sample", "detail": "keep 1 event in 2", "level": 2},
        {"step": "switch_off", "detail": "signal dns switched off", "signal": "dns", "level": 3}]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    make_run(root, "r1")
    return root


@pytest.fixture
def run_dir(pristine, tmp_path) -> Path:
    """A copy of a finished hand-made run (tests/support/runs.py write_run underneath)."""
    rel = Path("tag=main") / "scenario=dns_latency" / "run=r1"
    shutil.copytree(pristine / rel, tmp_path / "runs" / rel)
    return tmp_path / "runs" / rel


def _edit_manifest(run_dir: Path, **fields) -> None:
    m = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**m, **fields}))


def _cut(run_dir: Path) -> None:
    """The manifest a recorder killed with SIGKILL leaves: still 'recording', and no one holds the lock."""
    _edit_manifest(run_dir, state="recording", complete=False, stop_reason=None)


def _degrade(run_dir: Path) -> None:
    _edit_manifest(run_dir, degraded=True, safety={"max_overhead_pct": 2.0, "actions": SHED})


def _args(command: str, run_dir: Path, tmp_path: Path) -> list[str]:
    args = command_args(command, run_dir, tmp_path, sql="SELECT state, degraded FROM runs")
    return args + ["--format", "csv"] if command == "sql" else args


def _sloan(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _cut_warning(run_dir: Path) -> str:
    return (f"warning: run {run_dir} was cut: its recorder stopped without finishing (kill -9 or a crash); "
            f"counts are what is on disk; `slocap repair {run_dir}` rebuilds its manifest")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_warns_of_a_cut_run(run_dir, tmp_path, command):
    _cut(run_dir)
    r = CliRunner().invoke(main, _args(command, run_dir, tmp_path))
    assert "Traceback" not in r.output
    assert r.stderr.splitlines()[0] == _cut_warning(run_dir), r.output
    assert r.output.count("warning:") == 1


def test_sql_and_correlate_on_a_cut_run(run_dir, tmp_path):
    _cut(run_dir)
    r = _sloan("sql", "SELECT state, degraded, complete FROM runs", "--runs", run_dir, "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [_cut_warning(run_dir)]
    assert r.stdout.splitlines() == ['"state","degraded","complete"', '"cut",false,false']
    r = _sloan("correlate", "--runs", run_dir, "--json", "-")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [_cut_warning(run_dir)]
    run = json.loads(r.stdout)["runs"][0]
    assert (run["state"], run["degraded"]) == ("cut", False)


def test_a_run_being_recorded_is_partial_not_cut(run_dir):
    _cut(run_dir)
    fd = hold_recording(run_dir)  # as the recorder holds it while it writes the run
    try:
        for args in (("sql", "SELECT state FROM runs", "--format", "csv"), ("correlate",)):
            r = _sloan(*args, "--runs", run_dir)
            assert r.exit_code == 0, r.output
            assert r.stderr.splitlines() == [f"warning: run {run_dir} is still recording: results are partial"]
        r = _sloan("sql", "SELECT state FROM runs", "--runs", run_dir, "--format", "csv")
        assert r.stdout.splitlines() == ['"state"', '"recording"']
    finally:
        os.close(fd)
    r = _sloan("sql", "SELECT state FROM runs", "--runs", run_dir, "--format", "csv")
    assert r.stdout.splitlines() == ['"state"', '"cut"']  # the recorder is gone: released by the kernel


def test_a_degraded_run_says_what_was_shed(run_dir):
    _degrade(run_dir)
    said = (f"warning: run {run_dir} is degraded: latency thresholds x4; keep 1 event in 2; "
            "signal dns switched off")
    r = _sloan("sql", "SELECT state, degraded FROM runs", "--runs", run_dir, "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [said]
    assert r.stdout.splitlines() == ['"state","degraded"', '"finished",true']
    r = _sloan("correlate", "--runs", run_dir)
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [said]
    r = _sloan("slo", "--runs", run_dir, "--json", "-")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)["runs"][0]["run"]
    assert (run["state"], run["degraded"]) == ("finished", True)


def test_a_cut_and_degraded_run_gets_both_lines(run_dir):
    _cut(run_dir)
    _degrade(run_dir)
    r = _sloan("slo", "--runs", run_dir.parents[2], "--json", "-")
    assert r.exit_code == 0, r.output
    degraded = (f"warning: run {run_dir} is degraded: latency thresholds x4; keep 1 event in 2; "
                "signal dns switched off")
    assert r.stderr.splitlines() == [_cut_warning(run_dir), degraded]
    assert json.loads(r.stdout)["runs"][0]["run"]["state"] == "cut"


def test_a_repaired_cut_run_is_still_named_cut(run_dir):
    _edit_manifest(run_dir, state="cut", complete=False, repaired={"at": "2026-01-01T00:00:00+00:00"})
    said = (f"run {run_dir} was cut: its recorder stopped without finishing (kill -9 or a crash); "
            "slocap repair rebuilt its manifest from the parts on disk")
    assert run_warnings(run_dir, json.loads((run_dir / "manifest.json").read_text())) == [said]


def test_degraded_names_the_steps_the_recorder_did_not_list(run_dir):
    _edit_manifest(run_dir, degraded=True, safety={"actions": SHED[:1], "actions_not_listed": 40})
    runs = open_runs([run_dir])
    assert runs.warnings == [f"run {run_dir} is degraded: latency thresholds x4; 40 more step(s) not listed"]


def test_degraded_without_actions_still_warns(run_dir):
    _edit_manifest(run_dir, degraded=True, safety={"actions": "?"})
    runs = open_runs([run_dir])
    said = f"run {run_dir} is degraded: the recorder shed load (its manifest lists no safety.actions)"
    assert runs.warnings == [said]
    assert runs.con.sql("SELECT state, degraded FROM runs").fetchall() == [("finished", True)]


def test_a_finished_run_gives_no_warning(run_dir):
    r = _sloan("sql", "SELECT state, degraded FROM runs", "--runs", run_dir, "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    assert r.stdout.splitlines() == ['"state","degraded"', '"finished",false']


def _raw_spans(run_dir: Path) -> None:
    """What a recorder leaves when its spans were never flattened: otlp_raw parts, spans_state raw."""
    import pyarrow.parquet as pq

    from runfmt.schema import OTLP_RAW

    (run_dir / "otlp_raw").mkdir()
    pq.write_table(OTLP_RAW.empty_table(), run_dir / "otlp_raw" / "part-00000.parquet")
    m = json.loads((run_dir / "manifest.json").read_text())
    _edit_manifest(run_dir, otlp={**(m.get("otlp") or {}), "enabled": True, "spans_state": "raw"})


def test_a_run_whose_spans_are_still_raw_says_how_to_flatten_them(run_dir):
    _raw_spans(run_dir)
    said = f"warning: run {run_dir}: its spans are still raw OTLP bodies: run `slocap repair {run_dir}`"
    r = _sloan("sql", "SELECT count(*) AS n FROM otlp_raw", "--runs", run_dir, "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [said]
    _cut(run_dir)
    assert run_warnings(run_dir, json.loads((run_dir / "manifest.json").read_text()))[1] == said[len("warning: "):]


def test_raw_spans_are_no_warning_while_recording_or_once_flattened(run_dir):
    _raw_spans(run_dir)
    _cut(run_dir)
    fd = hold_recording(run_dir)  # still recording: its spans are raw by design until it ends
    try:
        assert run_warnings(run_dir, json.loads((run_dir / "manifest.json").read_text())) == [
            f"run {run_dir} is still recording: results are partial"]
    finally:
        os.close(fd)
    _edit_manifest(run_dir, state="finished", complete=True)
    (run_dir / "otlp_raw" / "part-00000.parquet").unlink()  # flattened: the parts are gone
    assert run_warnings(run_dir, json.loads((run_dir / "manifest.json").read_text())) == []
    _edit_manifest(run_dir, otlp={"enabled": True})  # older runs have no spans_state: final
    assert run_warnings(run_dir, json.loads((run_dir / "manifest.json").read_text())) == []
