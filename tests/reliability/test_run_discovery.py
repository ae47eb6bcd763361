"""Runs are found wherever they sit below a runs root, linked or not."""

from __future__ import annotations

import json

from tests.support.runs import write_run


def test_a_run_symlinked_into_a_runs_root_is_read_like_any_other(tmp_path, sloan):
    """A run folder symlinked into a runs root (and a link cycle): read like any other run."""
    elsewhere = tmp_path / "elsewhere"
    real = write_run(elsewhere, "linked", tag="main", scenario="dns_latency")
    root = tmp_path / "runs" / "tag=main" / "scenario=dns_latency"
    root.mkdir(parents=True)
    (root / real.name).symlink_to(real, target_is_directory=True)
    (root / "loop").symlink_to(tmp_path / "runs", target_is_directory=True)  # a cycle must end
    write_run(tmp_path / "runs", "plain", tag="main", scenario="dns_latency")
    r = sloan("sql", "SELECT run_id FROM runs ORDER BY run_id", "--runs", str(tmp_path / "runs"), "--format", "json")
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["run_id"] for line in r.output.splitlines()] == ["linked", "plain"]
