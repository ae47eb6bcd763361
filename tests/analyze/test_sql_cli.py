"""sloan sql over hand-made run directories: views, formats, damaged files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capture import columns as S
from tests.support.runs import write_run


def _make_run(root, run_id, signals=("dns", "dns", "connect")):
    n = len(signals)
    table = S.kernel_events_table({
        "ts_ns": np.arange(n, dtype=np.int64) + 1_700_000_000_000_000_000,
        "signal": pa.array(signals), "pid": np.full(n, 42, np.int32),
        "value_ns": np.array([1_000_000 * (i + 1) for i in range(n)], np.int64),
        "errno": np.zeros(n, np.int32)}, n)
    return write_run(root, run_id, scenario="adhoc", kernel_events=table)


def test_views_span_every_run_below_a_root(tmp_path, sloan):
    _make_run(tmp_path, "a")
    _make_run(tmp_path, "b")
    r = sloan("sql", "SELECT run, signal, count(*) AS n FROM kernel_events GROUP BY ALL ORDER BY ALL",
             "--runs", str(tmp_path), "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == ['"run","signal","n"', '"a","connect",1', '"a","dns",2',
                                     '"b","connect",1', '"b","dns",2']
    r = sloan("sql", "SELECT run_id, mode FROM runs ORDER BY 1", "--runs", str(tmp_path), "--format", "json")
    assert [json.loads(line) for line in r.output.splitlines()] == [
        {"run_id": "a", "mode": "core_full"}, {"run_id": "b", "mode": "core_full"}]


def test_parquet_output_needs_a_file(tmp_path, sloan):
    _make_run(tmp_path, "a")
    r = sloan("sql", "SELECT 1", "--runs", str(tmp_path), "--format", "parquet")
    assert r.exit_code == 2
    assert "--format parquet needs --output FILE" in r.output
    out = tmp_path / "out.parquet"
    r = sloan("sql", "SELECT * FROM kernel_events", "--runs", str(tmp_path), "--format", "parquet", "-o", str(out))
    assert r.exit_code == 0 and pq.read_table(out).num_rows == 3


def test_corrupt_part_is_named_and_skip_bad_opens_the_rest(tmp_path, sloan):
    _make_run(tmp_path, "good")
    bad = _make_run(tmp_path, "bad") / "kernel_events" / "part-00000.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    r = sloan("sql", "SELECT count(*) AS n FROM kernel_events", "--runs", str(tmp_path))
    assert r.exit_code == 1
    assert f"error: {bad}: not readable Parquet" in r.output
    assert "pass --skip-bad to open the rest" in r.output
    r = sloan("sql", "SELECT count(*) AS n FROM kernel_events", "--runs", str(tmp_path), "--skip-bad", "--format", "csv")
    assert r.exit_code == 0
    assert f"skipped: {bad}: not readable Parquet" in r.output
    assert r.output.splitlines()[-1] == "3"


def test_missing_column_is_named(tmp_path, sloan):
    run_dir = _make_run(tmp_path, "a")
    pq.write_table(pa.table({"ts_ns": [1]}), run_dir / "kernel_events" / "part-00001.parquet")
    r = sloan("sql", "SELECT 1", "--runs", str(tmp_path))
    assert r.exit_code == 1
    assert "part-00001.parquet: missing column(s) signal, pid" in r.output


def test_no_runs_and_bad_sql_say_what_to_do(tmp_path, sloan):
    r = sloan("sql", "SELECT 1", "--runs", str(tmp_path))
    assert r.exit_code == 1
    assert "no run directory (with manifest.json)" in r.output
    assert "slocap record --out DIR" in r.output
    _make_run(tmp_path, "a")
    r = sloan("sql", "SELECT nope FROM kernel_events", "--runs", str(tmp_path))
    assert r.exit_code == 1
    assert "error: query failed:" in r.output
    assert "DESCRIBE kernel_events" in r.output


@pytest.mark.parametrize("query", ["events_by_signal"])
def test_named_queries_have_a_header(query):
    from runfmt import queries

    text = queries.load(query)
    assert text.startswith(f"-- {query}:")
    assert "-- columns:" in text


@pytest.mark.parametrize("statement, says", [
    ("COPY (SELECT 1) TO '{part}'", "COPY statements are refused"),
    ("COPY kernel_events TO '{out}/copy.csv'", "COPY statements are refused"),
    ("EXPORT DATABASE '{out}/db'", "EXPORT statements are refused"),
    ("ATTACH '{out}/x.db'", "ATTACH statements are refused"),
    ("INSTALL httpfs", "LOAD statements are refused"),
    ("LOAD httpfs", "LOAD statements are refused"),
    ("CREATE TABLE t AS SELECT 1", "CREATE statements are refused"),
    ("SET enable_external_access = true", "SET statements are refused"),
    ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
    ("SELECT * FROM read_parquet('{out}/*.parquet')", "file system operations are disabled"),
])
def test_sql_reads_the_runs_and_nothing_else(tmp_path, sloan, statement, says):
    run_dir = _make_run(tmp_path / "runs", "r1")
    out = tmp_path / "elsewhere"
    out.mkdir()
    part = run_dir / "kernel_events" / "part-00000.parquet"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    r = sloan("sql", statement.format(part=part, out=out), "--runs", run_dir)
    assert r.exit_code == 1 and says in r.output.splitlines()[0], r.output
    assert len(r.output.splitlines()) == 2  # the error, then what to do
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert list(out.iterdir()) == []
    # reading the runs still works, and --output is the one way to write a result
    r = sloan("sql", "SELECT count(*) AS n FROM kernel_events", "--runs", run_dir, "--format", "csv",
              "-o", out / "n.csv")
    assert r.exit_code == 0 and (out / "n.csv").read_text().splitlines() == ['"n"', "3"]


def test_csv_writes_nested_columns_as_json(tmp_path, sloan):
    run_dir = write_run(tmp_path / "runs", "r1", kernel_hist=[
        {"ts_ns": 1, "slice_ns": 1, "signal": "runqueue", "kind": "pid", "buckets": [0, 2, 1]}])
    r = sloan("sql", "SELECT buckets FROM kernel_hist", "--runs", run_dir, "--format", "csv")
    assert r.exit_code == 0 and r.output.splitlines() == ['"buckets"', '"[0, 2, 1]"'], r.output
