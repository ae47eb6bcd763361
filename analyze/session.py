"""Opens run directories as DuckDB views: kernel_events, kernel_hist, spans, runs.

A path may be one run directory (it holds manifest.json) or any folder above
runs in the hive layout tag=/scenario=/run=; every run below it is opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from runfmt.manifest import read_manifest
from runfmt.errors import DataError, SloError
from runfmt.manifest import MANIFEST
from runfmt.schema import TABLES

# what sloan sql runs: statements that read (DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB)
READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})

# the runs view: one row per manifest
RUNS = pa.schema([
    ("run_id", pa.string()), ("tag", pa.string()), ("scenario", pa.string()), ("seed", pa.int64()),
    ("profile", pa.string()), ("mode", pa.string()), ("complete", pa.bool_()), ("stop_reason", pa.string()),
    ("started_at", pa.string()), ("duration_s", pa.float64()), ("git_sha", pa.string()), ("node", pa.string()),
    ("counters", pa.string()), ("path", pa.string()),
])


@dataclass
class Runs:
    con: duckdb.DuckDBPyConnection
    run_dirs: list[Path]
    skipped: list[str] = field(default_factory=list)  # "file: reason" for --skip-bad
    files: list[str] = field(default_factory=list)  # every Parquet file the views read

    def read_only(self) -> None:
        """From now on the connection may read the runs' files and nothing else (sloan sql):
        DuckDB's own settings, then its configuration locked so no statement undoes them."""
        paths = sorted({str(Path(f).resolve()) for f in self.files} | set(self.files))
        self.con.execute("SET allowed_paths = $paths", {"paths": paths})
        for setting in ("enable_external_access", "autoinstall_known_extensions", "autoload_known_extensions"):
            self.con.execute(f"SET {setting} = false")
        self.con.execute("SET lock_configuration = true")

    def check_reads_only(self, sql: str) -> None:
        """SloError unless every statement of `sql` only reads (SELECT, DESCRIBE, SHOW,
        SUMMARIZE, EXPLAIN): the views' own folders are readable, and must stay unwritten."""
        try:
            kinds = [s.type.name for s in self.con.extract_statements(sql)]
        except duckdb.Error as exc:
            raise SloError(f"query failed: {exc}", "views: kernel_events, kernel_hist, spans, requests, "
                                                   "resources, labels, runs; try: DESCRIBE kernel_events") from None
        refused = [k for k in kinds if k not in READ_STATEMENTS]
        if refused:
            raise SloError(f"sloan sql only reads the runs: {refused[0]} statements are refused",
                           "to keep a result, pass --output FILE (--format csv, json or parquet)")


def find_runs(paths: list[Path]) -> list[Path]:
    """Every run directory at or below each path; each path must hold at least one."""
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise DataError(f"{p} does not exist", "pass a run directory or a runs root")
        if (p / MANIFEST).is_file():
            found.append(p)
            continue
        if not p.is_dir():
            raise DataError(f"{p} is a file, not a run directory",
                            f"pass the folder that holds {MANIFEST}, or a runs root above it")
        below = sorted(m.parent for m in p.rglob(MANIFEST) if m.is_file())
        if not below:
            if _looks_like_run(p):
                raise DataError(f"{p}: no {MANIFEST}, so not a whole run directory",
                                f"slocap writes {MANIFEST} when recording starts; restore it, or remove that folder")
            raise DataError(f"no run directory (with {MANIFEST}) under {p}",
                            "record one with 'slocap record --out DIR'")
        found.extend(below)
    if not found:
        raise DataError(f"no run directory (with {MANIFEST}) given", "pass a run directory or a runs root")
    return found


def _looks_like_run(p: Path) -> bool:
    """A folder named run=... or holding a run's data files (but no manifest)."""
    return p.name.startswith("run=") or any(
        any(p.glob(pattern)) for _, pattern in TABLES.values())


def _never(t: pa.DataType) -> bool:
    return False


# view types are newer than the oldest pyarrow the project allows
_TEXT = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", _never))
_LIST = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list,
         getattr(pa.types, "is_list_view", _never), getattr(pa.types, "is_large_list_view", _never))


def _is_text(t: pa.DataType) -> bool:
    return any(is_(t) for is_ in _TEXT)


def _is_list(t: pa.DataType) -> bool:
    return any(is_(t) for is_ in _LIST)


def stands_for(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type `have` can be read as the schema's `want`: the same type or a
    safe widening (any integer for an integer, an integer or float for a float, any string
    encoding, timestamps of any unit); field names inside lists and maps do not matter."""
    if pa.types.is_dictionary(have):
        have = have.value_type
    if pa.types.is_null(have):  # every value null: stands for anything
        return True
    if pa.types.is_integer(want):
        return pa.types.is_integer(have)
    if pa.types.is_floating(want):
        return pa.types.is_floating(have) or pa.types.is_integer(have) or pa.types.is_decimal(have)
    if _is_text(want):
        return _is_text(have)
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(have)
    if _is_list(want):
        return _is_list(have) and stands_for(have.value_type, want.value_type)
    if pa.types.is_map(want):
        return (pa.types.is_map(have) and stands_for(have.key_type, want.key_type)
                and stands_for(have.item_type, want.item_type))
    if pa.types.is_struct(want):
        return pa.types.is_struct(have) and all(
            have.get_field_index(f.name) >= 0 and stands_for(have.field(f.name).type, f.type) for f in want)
    return have.equals(want)


def _check_parquet(path: Path, schema: pa.Schema) -> str | None:
    """None when the file is readable and has every column of the table, each of a type
    that stands for the schema's; else what is wrong, naming the columns."""
    try:
        have = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        return f"not readable Parquet ({exc})"
    problems = []
    missing = [f.name for f in schema if f.name not in have.names]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    for f in schema:
        if f.name in have.names:
            actual = have.field(f.name).type
            if not stands_for(actual, f.type):
                problems.append(f"column {f.name} is {actual}, expected {f.type}")
    return "; ".join(problems) or None


def _manifest_row(run_dir: Path, hint: str) -> dict:
    m = read_manifest(run_dir, hint)
    return {
        "run_id": m.get("run_id"), "tag": m.get("tag"), "scenario": m.get("scenario"),
        "seed": m.get("seed"), "profile": m.get("profile"),
        "mode": (m.get("capability") or {}).get("mode"),
        "complete": m.get("complete"), "stop_reason": m.get("stop_reason"),
        "started_at": m.get("started_at"),
        "duration_s": None if m.get("duration_s") is None else float(m["duration_s"]),
        "git_sha": m.get("git_sha"), "node": m.get("node"),
        "counters": json.dumps(m.get("counters")), "path": str(run_dir),
    }


def open_runs(paths: list[Path], *, skip_bad: bool = False, offer_skip_bad: bool = False) -> Runs:
    """Views over every run below `paths`. A damaged manifest or Parquet file raises
    DataError naming it, unless `skip_bad` (then it is left out and listed in `skipped`);
    `offer_skip_bad`: the caller has a --skip-bad option, so the hint mentions it."""
    runs = Runs(duckdb.connect(), find_runs([Path(p) for p in paths]))
    runs.con.execute("SET enable_progress_bar = false")  # DuckDB draws it on stdout, inside --json output
    or_skip = ", or pass --skip-bad to open the rest" if offer_skip_bad else ""
    rows = []
    for run_dir in runs.run_dirs:
        try:
            rows.append(_manifest_row(run_dir, f"fix or remove that run{or_skip}"))
        except DataError as exc:
            if not skip_bad:
                raise
            runs.skipped.append(exc.message)
    runs.con.from_arrow(pa.Table.from_pylist(rows, schema=RUNS)).create_view("runs")
    for table, (schema, pattern) in TABLES.items():
        files = []
        for run_dir in runs.run_dirs:
            for f in sorted(run_dir.glob(pattern)):
                problem = _check_parquet(f, schema)
                if problem is None:
                    files.append(str(f))
                elif skip_bad:
                    runs.skipped.append(f"{f}: {problem}")
                else:
                    raise DataError(f"{f}: {problem}", f"remove or repair that file{or_skip}")
        runs.files += files
        if files:
            runs.con.read_parquet(files, hive_partitioning=True, union_by_name=True).create_view(table)
        else:  # an empty table with the right columns, so queries still run
            runs.con.from_arrow(schema.empty_table()).create_view(table)
    return runs
