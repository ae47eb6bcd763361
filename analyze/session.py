"""Opens run directories as DuckDB views: kernel_events, kernel_hist, spans, runs.

A path may be one run directory (it holds manifest.json) or any folder above
runs in the hive layout tag=/scenario=/run=; every run below it is opened.

Opening checks each Parquet file's footer and schema, which costs a few reads per
file. A damaged data page behind an intact footer shows only when a query reads it:
`Runs.use` then names the file (or, with skip_bad, leaves it out and runs the work
again), so the cost of reading every page falls on the failing query alone.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from runfmt.errors import DataError, SloError
from runfmt.manifest import MANIFEST, read_manifest, run_state
from runfmt.schema import TABLES, is_optional

T = TypeVar("T")

# what sloan sql runs: statements that read (DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB)
READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})

# the runs view: one row per manifest
RUNS = pa.schema([
    ("run_id", pa.string()), ("tag", pa.string()), ("scenario", pa.string()), ("seed", pa.int64()),
    ("profile", pa.string()), ("mode", pa.string()), ("complete", pa.bool_()), ("stop_reason", pa.string()),
    ("started_at", pa.string()), ("duration_s", pa.float64()), ("git_sha", pa.string()), ("node", pa.string()),
    ("counters", pa.string()), ("path", pa.string()),
    ("state", pa.string()),  # finished, recording or cut (runfmt.manifest.run_state)
    ("degraded", pa.bool_()),  # the recorder shed load: manifest safety.actions says how
])

# DuckDB errors that say the statement is wrong, never the data it reads
_STATEMENT_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                     duckdb.PermissionException)
# what DuckDB's Parquet reader says of a damaged page; its decoders raise untyped errors
_READ_ERROR = re.compile(r"invalid data|zstd|snappy|gzip|lz4|brotli|decompress|corrupt|thrift|parquet|"
                         r"bit width|could not read", re.IGNORECASE)
_NAMED_FILE = re.compile(r'file "([^"]+)"')


@dataclass
class Runs:
    con: duckdb.DuckDBPyConnection | None
    run_dirs: list[Path]
    skipped: list[str] = field(default_factory=list)  # "file: reason" for --skip-bad
    tables: dict[str, list[str]] = field(default_factory=dict)  # view -> the Parquet files it reads
    rows: list[dict] = field(default_factory=list)  # the runs view, one row per readable manifest
    warnings: list[str] = field(default_factory=list)  # cut, recording and degraded runs (run_warnings)
    skip_bad: bool = False
    or_skip: str = ""  # how a hint offers --skip-bad, when the caller has it
    _locked: bool = False

    @property
    def files(self) -> list[str]:
        """Every Parquet file the views read."""
        return [f for files in self.tables.values() for f in files]

    def connect(self) -> None:
        """A fresh connection with the views over `rows` and `tables`."""
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")  # DuckDB draws it on stdout, inside --json output
        con.from_arrow(pa.Table.from_pylist(self.rows, schema=RUNS)).create_view("runs")
        for table, (schema, _) in TABLES.items():
            files = self.tables.get(table)
            if files:
                rel = con.read_parquet(files, hive_partitioning=True, union_by_name=True)
                absent = [f for f in schema if f.name not in rel.columns]  # optional, in none of the files
                if absent:  # read as null, as in a file that lacks one
                    types = con.from_arrow(pa.schema(absent).empty_table()).types
                    rel = rel.project(", ".join(["*", *(f'CAST(NULL AS {t}) AS "{f.name}"'
                                                       for f, t in zip(absent, types))]))
                rel.create_view(table)
            else:  # an empty table with the right columns, so queries still run
                con.from_arrow(schema.empty_table()).create_view(table)
        self.con = con
        if self._locked:
            self.read_only()

    def use(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """work(con). A query that fails on a damaged data page (the footer read, so
        open_runs let the file in) raises DataError naming the file; with skip_bad the
        file is left out, listed in `skipped`, and work runs again on a new connection."""
        while True:
            try:
                return work(self.con)
            except duckdb.Error as exc:
                damaged = self._damaged(exc)
                if not damaged:
                    raise
                if not self.skip_bad:
                    path, why = damaged[0]
                    raise DataError(f"{path}: damaged data page ({why})",
                                    f"remove or repair that file{self.or_skip}") from None
                self._leave_out(damaged)

    def _damaged(self, exc: duckdb.Error) -> list[tuple[str, str]]:
        """The files DuckDB cannot read whole, when `exc` may come from one: the file the
        message names first, else every file (stopping at the first unless skip_bad)."""
        if isinstance(exc, _STATEMENT_ERRORS) or not (
                type(exc) is duckdb.Error or isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException))
                or _READ_ERROR.search(str(exc))):
            return []
        files = self.files
        named = [f for f in _NAMED_FILE.findall(str(exc)) if f in files]
        found = []
        checker = duckdb.connect()  # self.con may be locked to reading the views only
        try:
            for f in dict.fromkeys(named + files):
                why = page_problem(checker, f)
                if why is not None:
                    found.append((f, why))
                    if f in named or not self.skip_bad:
                        break
        finally:
            checker.close()
        return found

    def _leave_out(self, damaged: list[tuple[str, str]]) -> None:
        bad = {f for f, _ in damaged}
        self.skipped += [f"{f}: damaged data page ({why})" for f, why in damaged]
        self.tables = {t: [f for f in files if f not in bad] for t, files in self.tables.items()}
        self.con.close()
        self.connect()

    def read_only(self) -> None:
        """From now on the connection may read the runs' files and nothing else (sloan sql):
        DuckDB's own settings, then its configuration locked so no statement undoes them.
        Kept when `use` opens a new connection."""
        self._locked = True
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
        below = _manifests_below(p)
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


def _manifests_below(root: Path) -> list[Path]:
    """Run directories below root, following symlinked folders (a run linked into a runs
    root is a run like any other), each real folder once, so a link cycle ends."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        if MANIFEST in files and os.path.isfile(os.path.join(folder, MANIFEST)):
            found.append(Path(folder))
    return sorted(found)


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
    missing = [f.name for f in schema if f.name not in have.names and not is_optional(f)]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    for f in schema:
        if f.name in have.names:
            actual = have.field(f.name).type
            if not stands_for(actual, f.type):
                problems.append(f"column {f.name} is {actual}, expected {f.type}")
    return "; ".join(problems) or None


def page_problem(con: duckdb.DuckDBPyConnection, path: str) -> str | None:
    """None when DuckDB decodes every value of every column of the file; else why not.
    An aggregate over each column, so every page is read and nothing is kept."""
    try:
        con.execute("SELECT max(hash(COLUMNS(*))) FROM read_parquet($path)", {"path": path}).fetchall()
    except duckdb.Error as exc:
        return _reason(exc)
    return None


def _reason(exc: Exception) -> str:
    """DuckDB's message without its class and the file name the caller already shows."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = re.sub(r"^[A-Za-z ]+ Error: ", "", text)
    return re.sub(r'^Failed to read file "[^"]+": ', "", text)


def _shed(manifest: dict) -> str:
    """What the recorder shed, from the manifest's safety.actions (capture/safety.py)."""
    safety = manifest.get("safety")
    actions = safety.get("actions") if isinstance(safety, dict) else None
    steps = [str(a.get("detail") or a.get("step")) for a in (actions if isinstance(actions, list) else [])
             if isinstance(a, dict) and (a.get("detail") or a.get("step"))]
    more = safety.get("actions_not_listed") if isinstance(safety, dict) else None
    if steps and isinstance(more, int) and not isinstance(more, bool) and more > 0:  # the recorder caps the list
        steps.append(f"{more} more step(s) not listed")
    return "; ".join(dict.fromkeys(steps)) or "the recorder shed load (its manifest lists no safety.actions)"


def run_warnings(run_dir: Path, manifest: dict) -> list[str]:
    """What to know before trusting a run's numbers: it was cut, is still being recorded,
    its spans are still raw OTLP requests, or its recorder shed load. One line each,
    without the `warning:` the CLI adds."""
    out = []
    state = run_state(run_dir, manifest)
    if state == "cut" and manifest.get("repaired"):
        out.append(f"run {run_dir} was cut: its recorder stopped without finishing (kill -9 or a crash); "
                   "slocap repair rebuilt its manifest from the parts on disk")
    elif state == "cut":
        out.append(f"run {run_dir} was cut: its recorder stopped without finishing (kill -9 or a crash); "
                   f"counts are what is on disk; `slocap repair {run_dir}` rebuilds its manifest")
    elif state == "recording":
        out.append(f"run {run_dir} is still recording: results are partial")
    # the recorder keeps the OTLP requests as they came while recording and flattens them
    # into spans when it ends; a run that never got there has no spans yet (older runs say
    # nothing: theirs were flattened as they came)
    otlp = manifest.get("otlp")
    if (state != "recording" and isinstance(otlp, dict) and otlp.get("spans_state") == "raw"
            and any((Path(run_dir) / "otlp_raw").glob("part-*.parquet"))):
        out.append(f"run {run_dir}: its spans are still raw OTLP bodies: run `slocap repair {run_dir}`")
    if manifest.get("degraded"):
        out.append(f"run {run_dir} is degraded: {_shed(manifest)}")
    return out


def warnings_below(paths: list[Path]) -> list[str]:
    """run_warnings of every run below `paths`; runs that cannot be found or read give
    none here, as the command that opens them names the problem."""
    try:
        run_dirs = find_runs([Path(p) for p in paths])
    except SloError:
        return []
    out = []
    for run_dir in run_dirs:
        try:
            out += run_warnings(run_dir, read_manifest(run_dir))
        except SloError:
            continue
    return out


def _manifest_row(run_dir: Path, m: dict) -> dict:
    return {
        "run_id": m.get("run_id"), "tag": m.get("tag"), "scenario": m.get("scenario"),
        "seed": m.get("seed"), "profile": m.get("profile"),
        "mode": (m.get("capability") or {}).get("mode"),
        "complete": m.get("complete"), "stop_reason": m.get("stop_reason"),
        "started_at": m.get("started_at"),
        "duration_s": None if m.get("duration_s") is None else float(m["duration_s"]),
        "git_sha": m.get("git_sha"), "node": m.get("node"),
        "counters": json.dumps(m.get("counters")), "path": str(run_dir),
        "state": run_state(run_dir, m), "degraded": bool(m.get("degraded")),
    }


def open_runs(paths: list[Path], *, skip_bad: bool = False, offer_skip_bad: bool = False) -> Runs:
    """Views over every run below `paths`. A damaged manifest or Parquet file raises
    DataError naming it, unless `skip_bad` (then it is left out and listed in `skipped`);
    `offer_skip_bad`: the caller has a --skip-bad option, so the hint mentions it.
    Queries go through `Runs.use`, which does the same for a damaged data page."""
    or_skip = ", or pass --skip-bad to open the rest" if offer_skip_bad else ""
    runs = Runs(None, find_runs([Path(p) for p in paths]), skip_bad=skip_bad, or_skip=or_skip)
    for run_dir in runs.run_dirs:
        try:
            m = read_manifest(run_dir, f"fix or remove that run{or_skip}")
        except DataError as exc:
            if not skip_bad:
                raise
            runs.skipped.append(exc.message)
            continue
        runs.rows.append(_manifest_row(run_dir, m))
        runs.warnings += run_warnings(run_dir, m)
    for table, (schema, pattern) in TABLES.items():
        runs.tables[table] = []
        for run_dir in runs.run_dirs:
            for f in sorted(run_dir.glob(pattern)):
                problem = _check_parquet(f, schema)
                if problem is None:
                    runs.tables[table].append(str(f))
                elif skip_bad:
                    runs.skipped.append(f"{f}: {problem}")
                else:
                    raise DataError(f"{f}: {problem}", f"remove or repair that file{or_skip}")
    runs.connect()
    return runs
