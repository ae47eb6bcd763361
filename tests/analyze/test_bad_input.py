"""Bad input for every sloan command that reads runs: a one-line error naming the file
(and column or field), no traceback. Exit 1 for sql, correlate, slo, attribute, score and
report; 2 (cannot judge) for compare, gate and repro, the release commands' CI convention."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyze.cli import main
from analyze.session import _check_parquet, stands_for
from runfmt import schema
from runfmt.schema import SPANS, TABLES
from tests.support.lab_run import make_run
from tests.support.runs import command_args

USER, CANNOT_JUDGE = 1, 2
EXIT = {"sql": USER, "correlate": USER, "slo": USER, "attribute": USER, "score": USER, "report": USER,
        "repro": CANNOT_JUDGE, "compare": CANNOT_JUDGE, "gate": CANNOT_JUDGE}
COMMANDS = list(EXIT)
DATASET = Path(__file__).resolve().parents[2] / "datasets" / "labeled"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Hand-made runs r1 and good, made once; each test works on a copy (make_run is slow)."""
    root = tmp_path_factory.mktemp("pristine")
    make_run(root, "r1")
    make_run(root, "good")
    make_run(root / "unlabelled", "r1", labels=False)
    return root


def _copy(pristine: Path, tmp_path: Path, run_id: str = "r1", source: Path | None = None) -> Path:
    """A copy of a pristine run under tmp_path/runs; returns its run directory."""
    rel = Path("tag=main") / "scenario=dns_latency" / f"run={run_id}"
    shutil.copytree((source or pristine) / rel, tmp_path / "runs" / rel)
    return tmp_path / "runs" / rel


def _args(command: str, path: Path, tmp_path: Path) -> list[str]:
    return command_args(command, path, tmp_path)


def _sloan(command: str, path: Path, tmp_path: Path):
    return CliRunner().invoke(main, _args(command, path, tmp_path))


def _set_column(path: Path, name: str, array_of) -> None:
    table = pq.read_table(path)
    i = table.schema.get_field_index(name)
    pq.write_table(table.set_column(i, name, array_of(table.column(i))), path)


def _edit_manifest(run_dir: Path, **fields) -> None:
    m = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**m, **fields}))


# each bad input: (run directory) -> (path to pass, file named, what the message says)
def _wrong_type(run_dir):
    f = run_dir / "requests" / "part-00000.parquet"
    _set_column(f, "ttft_ms", lambda c: c.cast(pa.string()))
    return run_dir, f, "column ttft_ms is string, expected double"


def _wrong_type_ts(run_dir):
    f = run_dir / "kernel_events" / "part-00000.parquet"
    _set_column(f, "ts_ns", lambda c: c.cast(pa.string()))
    return run_dir, f, "column ts_ns is string, expected int64"


def _missing_column(run_dir):
    f = run_dir / "requests" / "part-00000.parquet"
    pq.write_table(pq.read_table(f).drop_columns(["ttft_ms"]), f)
    return run_dir, f, "missing column(s) ttft_ms"


def _labels_missing_column(run_dir):
    f = run_dir / "labels.parquet"
    pq.write_table(pq.read_table(f).drop_columns(["start_ns"]), f)
    return run_dir, f, "missing column(s) start_ns"


def _labels_wrong_type(run_dir):
    f = run_dir / "labels.parquet"
    _set_column(f, "end_ns", lambda c: c.cast(pa.float64(), safe=False))
    return run_dir, f, "column end_ns is double, expected int64"


def _not_parquet(run_dir):
    f = run_dir / "spans" / "part-00000.parquet"
    f.write_bytes(b"PAR1 cut short")
    return run_dir, f, "not readable Parquet"


def _manifest_not_json(run_dir):
    f = run_dir / "manifest.json"
    f.write_text('{"run_id": "r1", ')
    return run_dir, f, "cannot read"


def _manifest_not_an_object(run_dir):
    f = run_dir / "manifest.json"
    f.write_text("[]")
    return run_dir, f, "not a JSON object but array"


def _manifest_wrong_field(run_dir):
    _edit_manifest(run_dir, phases={"baseline": "12s"})
    return run_dir, run_dir / "manifest.json", "field phases.baseline is string, expected number"


def _manifest_wrong_capability(run_dir):
    _edit_manifest(run_dir, capability="core_full")
    return run_dir, run_dir / "manifest.json", "field capability is string, expected object"


def _manifest_huge_seed(run_dir):
    _edit_manifest(run_dir, seed=10**30)
    return run_dir, run_dir / "manifest.json", "field seed is 1000000000000000000000000000000, out of range"


def _manifest_infinite_duration(run_dir):
    f = run_dir / "manifest.json"
    f.write_text(f.read_text().rstrip().rstrip("}") + ', "duration_s": 1e400}')  # json.loads reads inf
    return run_dir, f, "field duration_s is inf, out of range (0 to 1e+09)"


def _no_manifest(run_dir):
    (run_dir / "manifest.json").unlink()
    return run_dir, run_dir, "no manifest.json, so not a whole run directory"


def _unknown_path(run_dir):
    nope = run_dir.parent / "run=nope"
    return nope, nope, "does not exist"


def _a_file(run_dir):
    f = run_dir / "requests" / "part-00000.parquet"
    return f, f, "is a file, not a run directory"


BAD = {f.__name__.lstrip("_"): f for f in (
    _wrong_type, _wrong_type_ts, _missing_column, _labels_missing_column, _labels_wrong_type, _not_parquet,
    _manifest_not_json, _manifest_not_an_object, _manifest_wrong_field, _manifest_wrong_capability,
    _manifest_huge_seed, _manifest_infinite_duration, _no_manifest, _unknown_path, _a_file)}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_one_line_naming_the_file(pristine, tmp_path, command, kind):
    run_dir = _copy(pristine, tmp_path)
    path, named, says = BAD[kind](run_dir)
    r = _sloan(command, path, tmp_path)
    assert r.exit_code == EXIT[command], r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    first = r.output.splitlines()[0]
    assert first.startswith(f"error: {named}"), r.output
    assert says in first, r.output
    assert len(r.output.splitlines()) == 2  # the error, then the fix


def _empty(run_dir: Path, *, zero_rows: bool) -> None:
    """A run whose manifest exists but whose data holds nothing: no files, or files of 0 rows."""
    for sub, table_schema in (("requests", schema.REQUESTS), ("spans", SPANS), ("kernel_events", schema.KERNEL_EVENTS)):
        shutil.rmtree(run_dir / sub)
        if zero_rows:
            (run_dir / sub).mkdir()
            pq.write_table(table_schema.empty_table(), run_dir / sub / "part-00000.parquet")


@pytest.mark.parametrize("command", ["correlate", "slo", "attribute", "score", "report"])
@pytest.mark.parametrize("zero_rows", [False, True], ids=["no-files", "zero-rows"])
def test_empty_run_says_which_run_has_nothing_to_analyze(pristine, tmp_path, command, zero_rows):
    good = _copy(pristine, tmp_path, "good")
    run_dir = _copy(pristine, tmp_path)
    _empty(run_dir, zero_rows=zero_rows)
    for path in (run_dir, tmp_path / "runs"):  # alone, and beside a good run
        r = _sloan(command, path, tmp_path)
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output
        first = r.output.splitlines()[0]
        assert first.startswith(f"error: {run_dir}: nothing to "), r.output
        assert ("no kernel events recorded" if command == "correlate" else "no requests recorded") in first
    assert good.is_dir()


@pytest.mark.parametrize("command", ["score", "report"])
def test_no_labelled_run_is_nothing_to_score(pristine, tmp_path, command):
    run_dir = _copy(pristine, tmp_path, source=pristine / "unlabelled")
    r = _sloan(command, run_dir, tmp_path)
    assert r.exit_code == 1, r.output
    assert r.output.splitlines()[0] == f"error: nothing to score: no labelled run (with labels.parquet) under {run_dir}"


def test_sql_on_an_empty_run_still_runs(pristine, tmp_path):
    run_dir = _copy(pristine, tmp_path)
    _empty(run_dir, zero_rows=False)
    r = CliRunner().invoke(main, ["sql", "SELECT count(*) AS n FROM requests", "--runs", str(run_dir),
                                  "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == ['"n"', "0"]


@pytest.mark.parametrize("command", ["repro", "compare", "gate"])
def test_release_commands_on_empty_runs_cannot_judge(pristine, tmp_path, command):
    for tag in ("main", "next"):
        run_dir = _copy(pristine, tmp_path / tag)
        _edit_manifest(run_dir, tag=tag)
        _empty(run_dir, zero_rows=True)
        (tmp_path / "runs").mkdir(exist_ok=True)
        run_dir.parents[1].rename(tmp_path / "runs" / f"tag={tag}")
    r = _sloan(command, tmp_path / "runs", tmp_path)
    assert r.exit_code == CANNOT_JUDGE, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    first = r.output.splitlines()[0]
    assert first.startswith("error: ") and str(tmp_path / "runs") in first, r.output
    if command != "repro":
        assert "nothing to compare" in first and "run=r1" in first


def test_other_commands_point_at_skip_bad_only_where_it_exists(pristine, tmp_path):
    run_dir = _copy(pristine, tmp_path)
    _wrong_type(run_dir)
    assert "--skip-bad" in _sloan("sql", run_dir, tmp_path).output
    assert "--skip-bad" in _sloan("compare", run_dir, tmp_path).output
    assert "--skip-bad" not in _sloan("slo", run_dir, tmp_path).output
    r = CliRunner().invoke(main, ["sql", "SELECT count(*) AS n FROM requests", "--runs", str(tmp_path / "runs"),
                                  "--skip-bad", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert "skipped:" in r.output and "column ttft_ms is string, expected double" in r.output
    assert r.output.splitlines()[-1] == "0"


def test_safe_widenings_still_open(pristine, tmp_path):
    """What other writers produce for the same data: narrower or wider ints, float32,
    large or dictionary strings, list/map fields named otherwise, all-null columns."""
    run_dir = _copy(pristine, tmp_path)
    req = run_dir / "requests" / "part-00000.parquet"
    _set_column(req, "ttft_ms", lambda c: c.cast(pa.float32()))
    _set_column(req, "e2e_ms", lambda c: pc.round(c).cast(pa.int64()))
    _set_column(req, "attempts", lambda c: c.cast(pa.int64()))
    _set_column(req, "scheduled_ns", lambda c: c.cast(pa.uint64()))
    _set_column(req, "status", lambda c: c.cast(pa.large_string()))
    _set_column(req, "phase", lambda c: c.dictionary_encode())
    _set_column(req, "itl_ms", lambda c: c.cast(pa.large_list(pa.field("element", pa.float32()))))
    _set_column(req, "error", lambda c: pa.nulls(len(c)))
    ev = run_dir / "kernel_events" / "part-00000.parquet"
    _set_column(ev, "pid", lambda c: c.cast(pa.int64()))
    _set_column(ev, "signal", lambda c: c.dictionary_encode())
    for f in (req, ev):
        assert _check_parquet(f, TABLES[f.parent.name][0]) is None
    for command in ("slo", "correlate"):
        r = _sloan(command, run_dir, tmp_path)
        assert r.exit_code == 0, r.output


@pytest.mark.parametrize(("have", "want", "ok"), [
    (pa.int32(), pa.int64(), True),
    (pa.int64(), pa.int32(), True),
    (pa.uint32(), pa.int64(), True),
    (pa.float32(), pa.float64(), True),
    (pa.int64(), pa.float64(), True),
    (pa.large_string(), pa.string(), True),
    *([(pa.string_view(), pa.string(), True)] if hasattr(pa, "string_view") else []),
    (pa.dictionary(pa.int32(), pa.string()), pa.string(), True),
    (pa.null(), pa.int64(), True),
    (pa.timestamp("us"), pa.timestamp("ns"), True),
    (pa.list_(pa.field("element", pa.int32())), pa.list_(pa.int64()), True),
    (pa.map_(pa.large_string(), pa.string()), pa.map_(pa.string(), pa.string()), True),
    (pa.string(), pa.float64(), False),
    (pa.string(), pa.int64(), False),
    (pa.float64(), pa.int64(), False),
    (pa.timestamp("ns"), pa.int64(), False),
    (pa.binary(), pa.string(), False),
    (pa.int64(), pa.string(), False),
    (pa.bool_(), pa.int32(), False),
    (pa.list_(pa.string()), pa.list_(pa.float64()), False),
    (pa.float64(), pa.list_(pa.float64()), False),
    (pa.dictionary(pa.int32(), pa.string()), pa.int64(), False),
])
def test_which_types_stand_for_the_schemas(have, want, ok):
    assert stands_for(have, want) is ok


def test_committed_dataset_passes_the_check():
    files = 0
    for table, (table_schema, pattern) in TABLES.items():
        for f in DATASET.glob(f"tag=*/scenario=*/run=*/{pattern}"):
            assert _check_parquet(f, table_schema) is None, f
            files += 1
    assert files > 0


@pytest.mark.parametrize("command", ["slo", "compare"])
def test_paths_that_look_like_markup_are_printed_as_they_are(tmp_path, command):
    odd = tmp_path / "runs[bold]" / "a[" / "b]"  # '[/b]' across two folders: a closing tag to rich
    r = _sloan(command, odd, tmp_path)
    assert r.exit_code == EXIT[command], r.output
    assert r.output.splitlines()[0] == f"error: {odd} does not exist"


# --- a damaged data page behind an intact footer ---------------------------------------------
# open_runs reads footers only, so such a file opens; the query that reads the page fails,
# and analyze.session.Runs.use names the file (or, with --skip-bad, leaves it out)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of every zstd frame
DAMAGE = {  # how -> what DuckDB says of the page
    "zstd": "ZSTD Decompression failure",  # the page's zstd frame loses its magic number
    "header": "TProtocolException: Invalid data",  # the page header (Thrift) turns into zeros
}
# the column each command surely reads, so the damaged page is met
READS = {"correlate": ("kernel_events", "ts_ns")}
DEFAULT_READ = ("requests", "ttft_ms")


def _damage_page(path: Path, column: str, how: str) -> None:
    """Rewrites the part with zstd (as slocap writes it), then breaks the first data page of
    `column` in place: the footer, and so the schema, still read."""
    pq.write_table(pq.read_table(path), path, compression="zstd")
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    data = bytearray(path.read_bytes())
    at = data.index(ZSTD_MAGIC, chunk.data_page_offset) if how == "zstd" else chunk.data_page_offset
    data[at:at + 4] = bytes(4)
    path.write_bytes(bytes(data))


def _split(path: Path) -> Path:
    """The part cut in two halves, part-00000 and part-00001; returns the second."""
    table = pq.read_table(path)
    half = table.num_rows // 2
    second = path.with_name("part-00001.parquet")
    pq.write_table(table.slice(0, half), path)
    pq.write_table(table.slice(half), second)
    return second


@pytest.mark.parametrize("how", list(DAMAGE))
def test_the_damaged_page_passes_the_footer_check_and_fails_reading(pristine, tmp_path, how):
    import duckdb

    f = _copy(pristine, tmp_path) / "requests" / "part-00000.parquet"
    _damage_page(f, "ttft_ms", how)
    assert _check_parquet(f, schema.REQUESTS) is None  # what open_runs checks: it passes
    with pytest.raises(OSError):
        pq.read_table(f)
    with pytest.raises(duckdb.Error, match=DAMAGE[how]):
        duckdb.sql(f"SELECT sum(ttft_ms) FROM read_parquet('{f}')").fetchall()


def _damaged_args(command: str, path: Path, tmp_path: Path) -> list[str]:
    if command == "sql":  # count(*) comes from the footer; a sum reads the pages
        return ["sql", "SELECT sum(ttft_ms) AS s FROM requests", "--runs", str(path)]
    return _args(command, path, tmp_path)


@pytest.mark.parametrize(("command", "how"), [(c, "zstd") for c in COMMANDS]
                         + [("sql", "header"), ("correlate", "header")])
def test_damaged_data_page_is_one_line_naming_the_file(pristine, tmp_path, command, how):
    run_dir = _copy(pristine, tmp_path)
    table, column = READS.get(command, DEFAULT_READ)
    f = run_dir / table / "part-00000.parquet"
    _damage_page(f, column, how)
    r = CliRunner().invoke(main, _damaged_args(command, run_dir, tmp_path))
    assert r.exit_code == EXIT[command], r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.output.splitlines()
    assert lines[0] == f"error: {f}: damaged data page ({DAMAGE[how]})", r.output
    assert len(lines) == 2  # the error, then the fix
    offers = command in ("sql", "correlate", "compare", "gate", "repro")
    assert ("--skip-bad" in lines[1]) is offers, r.output


@pytest.mark.parametrize("how", list(DAMAGE))
def test_sql_skip_bad_leaves_a_damaged_page_out(pristine, tmp_path, how):
    run_dir = _copy(pristine, tmp_path)
    _copy(pristine, tmp_path, "good")
    f = run_dir / "kernel_events" / "part-00000.parquet"
    _damage_page(f, "ts_ns", how)
    good_events = pq.read_metadata(tmp_path / "runs" / "tag=main" / "scenario=dns_latency" / "run=good"
                                   / "kernel_events" / "part-00000.parquet").num_rows
    query = "SELECT count(*) AS n, count(DISTINCT run) AS runs, min(ts_ns) > 0 AS read FROM kernel_events"
    r = CliRunner().invoke(main, ["sql", query, "--runs", str(tmp_path / "runs"), "--skip-bad", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert r.stdout.splitlines() == ['"n","runs","read"', f"{good_events},1,true"]
    assert r.stderr.splitlines() == [f"skipped: {f}: damaged data page ({DAMAGE[how]})"]


@pytest.mark.parametrize("how", list(DAMAGE))
def test_correlate_skip_bad_leaves_a_damaged_page_out(pristine, tmp_path, how):
    run_dir = _copy(pristine, tmp_path)
    damaged = _split(run_dir / "kernel_events" / "part-00000.parquet")
    whole = pq.read_metadata(run_dir / "kernel_events" / "part-00000.parquet").num_rows
    _damage_page(damaged, "ts_ns", how)
    r = CliRunner().invoke(main, ["correlate", "--runs", str(run_dir)])
    assert r.exit_code == 1 and r.output.splitlines()[0] == f"error: {damaged}: damaged data page ({DAMAGE[how]})"
    r = CliRunner().invoke(main, ["correlate", "--runs", str(run_dir), "--skip-bad", "--json", "-"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    said = f"{damaged}: damaged data page ({DAMAGE[how]})"
    assert r.stderr.splitlines() == [f"skipped: {said}"]
    doc = json.loads(r.stdout)
    assert doc["events"] == whole  # the events of the readable half, correlated
    assert doc["skipped"] == doc["runs"][0]["skipped"] == [said]


def test_correlate_skip_bad_says_when_nothing_is_left(pristine, tmp_path):
    run_dir = _copy(pristine, tmp_path)
    f = run_dir / "kernel_events" / "part-00000.parquet"
    _damage_page(f, "ts_ns", "zstd")
    r = CliRunner().invoke(main, ["correlate", "--runs", str(run_dir), "--skip-bad"])
    assert r.exit_code == 1, r.output
    assert r.output.splitlines()[0] == (f"error: {run_dir}: nothing to correlate: no kernel events left once the "
                                        f"damaged files were skipped ({f}: damaged data page (ZSTD Decompression "
                                        "failure))")


def test_a_wrong_query_is_not_taken_for_a_damaged_file(pristine, tmp_path, monkeypatch):
    """A statement DuckDB refuses (an unknown column) reads no file: no file is checked."""
    from analyze import session

    run_dir = _copy(pristine, tmp_path)
    checked = []
    monkeypatch.setattr(session, "page_problem", lambda con, path: checked.append(path))
    r = CliRunner().invoke(main, ["sql", "SELECT nope FROM requests", "--runs", str(run_dir)])
    assert r.exit_code == 1 and r.output.startswith("error: query failed: Binder Error"), r.output
    assert checked == []


@pytest.mark.parametrize("how", list(DAMAGE))
def test_scrub_names_a_damaged_page(tmp_path, how):
    """scrub reads with pyarrow, not DuckDB: the same file named, in pyarrow's words."""
    recorded = DATASET / "tag=main" / "scenario=connect_stall" / "run=20261205T064456Z-3e0e"
    run_dir = tmp_path / "runs" / recorded.name
    shutil.copytree(recorded, run_dir)
    f = run_dir / "requests" / "part-00000.parquet"
    _damage_page(f, "ttft_ms", how)
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    r = CliRunner().invoke(main, ["scrub", "--runs", str(run_dir), "--out", str(tmp_path / "out"), "--key", str(key)])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"error: {f}: damaged data page ("), r.output
    assert len(lines) == 2
    assert not (tmp_path / "out").exists()  # all or nothing
