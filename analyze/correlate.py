"""Tiered correlation of kernel events with OpenTelemetry spans, one run at a time.

The tiers and their confidences (docs/architecture.md, sql/correlate_candidates.sql):
trace_id 1.0, pod_pid 0.9, pod_conn 0.8, and service_node 0.65 for diagnostics only.
Every kernel event is paired with one span at its best tier. Pairs of confidence >= 0.7
enrich their span; the others, and events without any pair, form the unmatched view.

The SQL lives in sql/correlate_*.sql, one step per file. Each run is correlated on its
own connection, so no event is ever paired with a span of another run. Beside each run:

  correlated.parquet      events matched at >= 0.7, with trace_id, span_id, tier, confidence
  enriched_spans.parquet  every span with per-signal aggregates of its matched events
  unmatched.parquet       the other events, with their service_node candidate if any

The plan (sql/correlate_candidates.sql): the tiers cascade, so an event paired at a tier
meets none below it; pods, nodes, services and addresses are numbered once per run and
joined as integers (sql/correlate_dictionary.sql), and the spans are ranked once by the
tie-break (sql/correlate_span_keys.sql), so choosing a span is taking the lowest rank.
A long run is correlated in time slices of about the same number of events
(sql/events_per_second.sql): the spans' side is built once per run, then each slice's
events meet the spans whose band reaches into the slice, and its rows are appended to the
output files by a writer thread while the next slice runs. Memory stays a few slices' worth
whatever the run's length; `memory_limit` caps DuckDB's share (it spills to a temporary
folder beyond it) and makes the slices smaller. A slice holds whole seconds, so events of
equal ts_ns are never split; the outputs are those of a whole-run pass (prepare), row for row.

analyze/correlate_spark.py runs the same STEPS and OUTPUTS on Apache Spark (`sloan correlate
--engine spark`), the SQL translated to Spark's dialect: one definition of the tiers, two engines.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Queue

import pyarrow as pa
import pyarrow.compute as pc

from runfmt import queries
from runfmt.errors import ConfigError, DataError

# best tier first; the SQL is the source of truth, this names them for summaries
TIERS = ("trace_id", "pod_pid", "pod_conn", "service_node")
CONFIDENCE = {"trace_id": 1.0, "pod_pid": 0.9, "pod_conn": 0.8, "service_node": 0.65}
ENRICH_MIN_CONFIDENCE = 0.7
DEFAULT_WINDOW_MS = 500
WINDOW_MS_RANGE = (1, 60_000)  # config/toolkit.schema.json correlation.window_ms

# the slice bounds of a whole-run pass (sql/correlate_events.sql)
WHOLE_RUN = (-(2**63), 2**63 - 1)

# (query, temp table it becomes, parameters it binds), in order
STEPS = (
    ("correlate_spans", "corr_spans", ()),
    ("correlate_dictionary", "corr_dict", ()),
    ("correlate_span_keys", "corr_span_keys", ()),
    ("correlate_pod_services", "corr_pod_services", ()),
    ("correlate_events", "corr_events", ("ts_first", "ts_last")),
    ("correlate_event_keys", "corr_event_keys", ()),
    ("correlate_candidates", "corr_candidates",
     ("window_ms", *(f"conf_{t}" for t in CONFIDENCE), "ts_first", "ts_last")),
    ("correlate_span_stats", "corr_span_stats", ("enrich_min",)),
    ("correlate_span_totals", "corr_span_totals", ()),
    ("correlate_best", "corr_best", ("enrich_min",)),
)
PER_RUN = frozenset({"corr_spans", "corr_dict", "corr_span_keys", "corr_pod_services"})  # spans only: once a run
VIEWS = frozenset({"corr_spans", "corr_event_keys"})  # read where needed (once each), never copied
APPENDED = frozenset({"corr_span_stats"})  # every slice adds its rows
# a sliced run holds each slice's events as Arrow (the outputs are cut from them) and takes the
# span ids by pref itself (_paired); corr_best serves the readers of a whole-run pass only
SLICE_STEPS = ("corr_event_keys", "corr_candidates", "corr_span_stats")
AFTER_SLICES = ("corr_span_totals",)
# the outputs each time slice adds rows to, cut from its events (_paired, _rows)
SLICED = ("correlated.parquet", "unmatched.parquet")
# output file -> query
OUTPUTS = {
    "correlated.parquet": "correlate_matched",
    "enriched_spans.parquet": "correlate_enrich",
    "unmatched.parquet": "correlate_unmatched",
}
# events per time slice. Up to three slices are in memory at once (one queried, one waiting,
# one being cut and written), about 1.4 KiB an event in all; larger slices are no faster
# (bench/correlate_throughput.py: 2M events in slices of 250k, 500k and 1M took the same time,
# peak RSS 0.86, 1.07 and 1.48 GiB)
SLICE_EVENTS = 500_000
MIN_SLICE_EVENTS = 50_000
SLICE_BYTES_PER_EVENT = 4_000  # under --memory-limit: slices of limit / this many events, so they take a third
MIN_MEMORY_LIMIT = 128 * 2**20
ENRICH_BATCH_ROWS = 100_000
# output columns written without a dictionary (trace and span ids)
UNIQUE_COLUMNS = frozenset({"trace_id", "span_id", "parent_span_id", "event_trace_id", "event_span_id"})
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

Progress = Callable[[Path, int, int], None]  # (run directory, events done, events in it)


@dataclass(frozen=True)
class RunCorrelation:
    """What correlation found in one run."""

    run_dir: Path
    events: int
    matched: int  # events paired with a span at confidence >= 0.7 (rows of correlated.parquet)
    unmatched: int  # the other events (rows of unmatched.parquet)
    diagnostic: int  # unmatched events with a service_node candidate
    spans: int
    spans_enriched: int  # spans with at least one matched event
    tiers: dict[str, int]  # events per best tier, service_node included
    written: tuple[Path, ...] = ()
    state: str | None = None  # finished, recording or cut (runfmt.manifest.run_state)
    degraded: bool = False  # the recorder shed load while recording it
    skipped: tuple[str, ...] = ()  # "file: reason" of what skip_bad left out

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "events": self.events, "matched": self.matched,
                "unmatched": self.unmatched, "diagnostic": self.diagnostic, "spans": self.spans,
                "spans_enriched": self.spans_enriched, "tiers": dict(self.tiers),
                "written": [str(p) for p in self.written], "state": self.state, "degraded": self.degraded,
                "skipped": list(self.skipped)}


@dataclass(frozen=True)
class CorrelationSummary:
    """Counts per run and in total; what `sloan correlate` prints."""

    window_ms: int
    runs: tuple[RunCorrelation, ...] = field(default_factory=tuple)

    def _total(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.runs)

    # the counts of all runs: the sum of each run's
    events = property(lambda self: self._total("events"))
    matched = property(lambda self: self._total("matched"))
    unmatched = property(lambda self: self._total("unmatched"))
    diagnostic = property(lambda self: self._total("diagnostic"))
    spans = property(lambda self: self._total("spans"))
    spans_enriched = property(lambda self: self._total("spans_enriched"))

    @property
    def tiers(self) -> dict[str, int]:
        return {t: sum(r.tiers[t] for r in self.runs) for t in TIERS}

    @property
    def skipped(self) -> list[str]:
        return [s for r in self.runs for s in r.skipped]

    def to_dict(self) -> dict:
        return {"window_ms": self.window_ms, "events": self.events, "matched": self.matched,
                "unmatched": self.unmatched, "diagnostic": self.diagnostic, "spans": self.spans,
                "spans_enriched": self.spans_enriched, "tiers": self.tiers, "skipped": self.skipped,
                "runs": [r.to_dict() for r in self.runs]}


@dataclass(frozen=True)
class Correlation:
    """The three output tables of one run, and their counts."""

    correlated: pa.Table
    enriched_spans: pa.Table
    unmatched: pa.Table
    summary: RunCorrelation


def check_window(window_ms: int) -> int:
    lo, hi = WINDOW_MS_RANGE
    if isinstance(window_ms, bool) or not isinstance(window_ms, int) or not lo <= window_ms <= hi:
        raise ConfigError(f"correlation window {window_ms!r} ms is not an integer from {lo} to {hi}",
                          "pass --window-ms N, or set correlation.window_ms in the config")
    return window_ms


def parse_memory_limit(limit: str | int | None) -> int | None:
    """Bytes of a size as DuckDB writes them ('2GB', '1.5GiB', '800MB'; a bare number is bytes),
    None for None. KB, MB, GB are powers of 1000, KiB, MiB, GiB of 1024."""
    if limit is None:
        return None
    if isinstance(limit, int) and not isinstance(limit, bool):
        size = limit
    else:
        m = _SIZE.match(str(limit))
        if m is None:
            raise ConfigError(f"memory limit {limit!r} is not a size", "pass --memory-limit like 2GB, 1.5GiB or 800MB")
        size = int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
    if size < MIN_MEMORY_LIMIT:
        raise ConfigError(f"memory limit {limit!r} is below {MIN_MEMORY_LIMIT // 2**20} MiB",
                          "pass --memory-limit 128MiB or more (the spans' side and one slice must fit)")
    return size


def slice_events(memory_limit: int | None) -> int:
    """Kernel events per time slice: SLICE_EVENTS, fewer under a small memory limit (bytes)."""
    if memory_limit is None:
        return SLICE_EVENTS
    return max(MIN_SLICE_EVENTS, min(SLICE_EVENTS, memory_limit // SLICE_BYTES_PER_EVENT))


def plan_slices(per_second: pa.Table, events: int) -> list[tuple[int, int]]:
    """(ts_first, ts_last) of each time slice, both inclusive, in time order: whole seconds of
    sql/events_per_second.sql, about `events` kernel events each (the run's events shared out
    evenly). The last slice reaches the largest timestamp, so it also takes the events without one."""
    rows = [r for r in per_second.to_pylist() if r["second"] is not None]
    total = sum(r["events"] for r in rows)
    per_slice = -(-total // max(1, -(-total // events))) if total else events
    slices: list[list[int]] = []
    held = 0
    for r in rows:
        if held == 0:
            slices.append([r["first_ns"], r["last_ns"]])
        slices[-1][1] = r["last_ns"]
        held += r["events"]
        if held >= per_slice:
            held = 0
    if not slices:
        slices.append(list(WHOLE_RUN))
    slices[-1][1] = WHOLE_RUN[1]
    return [(first, last) for first, last in slices]


def _params(window_ms: int, ts_first: int, ts_last: int) -> dict:
    # the tiers' confidences live here only; the SQL receives them as parameters
    return {"window_ms": check_window(window_ms), "enrich_min": ENRICH_MIN_CONFIDENCE,
            **{f"conf_{tier}": c for tier, c in CONFIDENCE.items()}, "ts_first": ts_first, "ts_last": ts_last}


def _steps(con, params: dict, tables: Iterable[str], *, append: bool = False) -> None:
    """The STEPS that make `tables`, in order; with `append`, APPENDED tables gain rows instead."""
    wanted_tables = set(tables)
    for name, table, wanted in STEPS:
        if table not in wanted_tables:
            continue
        sql = queries.load(name)
        bound = {k: params[k] for k in wanted}
        # the table name comes from STEPS, never from input; DuckDB binds the parameters
        if table in VIEWS:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS\n{sql}")
        elif append and table in APPENDED:
            con.execute(f"INSERT INTO {table}\n{sql}", bound)
        else:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS\n{sql}", bound)


def prepare(con, window_ms: int = DEFAULT_WINDOW_MS) -> None:
    """Runs the steps over the whole run, in one slice: temp tables corr_events, corr_best (one row
    per paired event), corr_span_stats and the others of STEPS, which the OUTPUTS queries read.

    `con` holds the views of exactly one run (analyze.session.open_runs on one run directory).
    """
    _steps(con, _params(window_ms, *WHOLE_RUN), [table for _, table, _ in STEPS])


def _count(table: pa.Table, column: str) -> dict[str, int]:
    counts = pc.value_counts(table.column(column)).to_pylist() if table.num_rows else []
    return {c["values"]: c["counts"] for c in counts if c["values"] is not None}


class _Tables:
    """The outputs kept in memory (correlate_run)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[pa.Table]] = {}

    def add(self, file: str, table: pa.Table) -> None:
        self.parts.setdefault(file, []).append(table)

    def add_slice(self, events: pa.Table, candidates: pa.Table, ids: pa.Table) -> None:
        for file, table in zip(SLICED, _split(events, candidates, ids)):
            self.add(file, table)

    def finish(self) -> dict[str, pa.Table]:
        return {file: parts[0] if len(parts) == 1 else pa.concat_tables(parts) for file, parts in self.parts.items()}

    def abort(self) -> None:
        self.parts.clear()


class _Counted:
    """The outputs counted, not kept (correlate with write=False)."""

    def add(self, file: str, table: pa.Table) -> None:
        pass

    def add_slice(self, events: pa.Table, candidates: pa.Table, ids: pa.Table) -> None:
        pass

    def finish(self) -> list[Path]:
        return []

    def abort(self) -> None:
        pass


class _Files:
    """Appends each output's rows to its file beside the run from a thread of its own, which also
    cuts each slice's events into correlated and unmatched rows (_split): that and zstd overlap the
    next slice's queries. (Two such threads, one per file, were slower on 2 busy vCPUs.) Each file
    is written under a hidden temporary name and renamed into place once whole (as
    runfmt.writer.write_table_atomic does)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._queue: Queue = Queue(maxsize=1)  # one slice waiting while one is written: bounds their memory
        self._writers: dict = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="correlate-writer", daemon=True)
        self._thread.start()

    def _tmp(self, file: str) -> Path:
        return self.run_dir / f".{file}.tmp"

    def _put(self, item: tuple) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def add(self, file: str, table: pa.Table) -> None:
        self._put((file, table))

    def add_slice(self, events: pa.Table, candidates: pa.Table, ids: pa.Table) -> None:
        self._put((None, (events, candidates, ids)))

    def _write(self, file: str, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        writer = self._writers.get(file)
        if writer is None:
            # ids are nearly all distinct: a dictionary for them costs time and bytes, and is dropped
            dictionary = [name for name in table.column_names if name not in UNIQUE_COLUMNS]
            writer = self._writers[file] = pq.ParquetWriter(self._tmp(file), table.schema, compression="zstd",
                                                            use_dictionary=dictionary, memory_pool=_pool())
        if table.num_rows:
            writer.write_table(table)

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep taking, so the producer never blocks
            file, data = item
            try:
                if file is None:
                    for name, table in zip(SLICED, _split(*data)):
                        self._write(name, table)
                else:
                    self._write(file, data)
            except BaseException as exc:  # handed to the producer
                self._error = exc

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> list[Path]:
        self._stop()
        if self._error is not None:
            self.abort()
            raise self._error
        written = []
        for file in OUTPUTS:
            self._writers.pop(file).close()
            os.replace(self._tmp(file), self.run_dir / file)
            written.append(self.run_dir / file)
        return written

    def abort(self) -> None:
        self._stop()
        for file, writer in self._writers.items():
            try:
                writer.close()
            except Exception:  # a half-written file is removed either way
                pass
            self._tmp(file).unlink(missing_ok=True)
        self._writers.clear()


def _ids_by_pref(con) -> pa.Table:
    """trace_id, span_id of the spans of corr_span_keys, row pref - 1 for each pref (spans of
    equal pref carry equal ids)."""
    import numpy as np

    keys = con.table("corr_span_keys").select("pref", "trace_id", "span_id").to_arrow_table()
    pref = keys.column("pref").to_numpy()
    row = np.zeros(int(pref.max()) if len(pref) else 0, np.int64)
    row[pref - 1] = np.arange(len(pref))
    return keys.select(["trace_id", "span_id"]).take(pa.array(row))


def _pool():
    """The Arrow memory pool for the outputs' copies: jemalloc where pyarrow has it, else the C
    library's. pyarrow's default, mimalloc, backs a process's first fresh GiB with transparent huge
    pages where the kernel allows them on request, and compacting memory for those took about 1 s
    of system time per million events on a busy 2-vCPU host (bench/correlate_throughput.py)."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()


def _paired(events: pa.Table, candidates: pa.Table, ids: pa.Table) -> tuple[dict, pa.Array]:
    """The rows of a slice's correlated.parquet and unmatched.parquet together, as
    sql/correlate_matched.sql and correlate_unmatched.sql make them from corr_best: each event
    (corr_events, numbered 1..n) with its pair's trace_id, span_id, tier and confidence, ordered
    by ts_ns then event_no; and which of them go to correlated.parquet (confidence >= 0.7)."""
    import numpy as np

    pool = _pool()
    n = events.num_rows
    event_no = events.column("event_no").to_numpy()
    row = np.full(n, -1, np.int64)
    row[candidates.column("event_no").to_numpy() - 1] = np.arange(candidates.num_rows)
    pick = pa.array(row, mask=row < 0)
    pref = pc.take(candidates.column("pref"), pick, memory_pool=pool)
    span = pc.subtract(pref, pa.scalar(1, pref.type), memory_pool=pool)
    confidence = pc.take(candidates.column("confidence"), pick, memory_pool=pool)
    columns = {name: events.column(name) for name in events.column_names if name != "event_no"}
    columns |= {"trace_id": pc.take(ids.column("trace_id"), span, memory_pool=pool),
                "span_id": pc.take(ids.column("span_id"), span, memory_pool=pool),
                "tier": pc.take(candidates.column("tier"), pick, memory_pool=pool), "confidence": confidence}
    enriches = pc.fill_null(pc.greater_equal(confidence, ENRICH_MIN_CONFIDENCE), False).combine_chunks()
    ts = events.column("ts_ns")
    in_order = (ts.null_count == 0 and np.array_equal(event_no, np.arange(1, n + 1))
                and bool(np.all(np.diff(ts.to_numpy()) >= 0)))
    if not in_order:  # ORDER BY ts_ns, event_no (nulls last, as DuckDB orders)
        order = pc.sort_indices(events, [("ts_ns", "ascending"), ("event_no", "ascending")])  # nulls at the end
        columns = {name: pc.take(column, order, memory_pool=pool) for name, column in columns.items()}
        enriches = enriches.take(order)
    return columns, enriches


def _rows(columns: dict, keep: pa.Array) -> pa.Table:
    # column by column: Table.filter first cuts every column at every other column's chunk edges
    return pa.table({name: pc.filter(column, keep, memory_pool=_pool()) for name, column in columns.items()})


def _split(events: pa.Table, candidates: pa.Table, ids: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The slice's rows of correlated.parquet and unmatched.parquet (_paired)."""
    columns, enriches = _paired(events, candidates, ids)
    return _rows(columns, enriches), _rows(columns, pc.invert(enriches))


def _span_ranges(con, spans_per_range: int) -> list:
    """corr_spans (sql/correlate_spans.sql) cut into ranges of start_ns of about `spans_per_range`
    spans each, in order, as relations; the last also holds the spans without start_ns. Every
    range reads the spans' files again, so there is one for all but the largest runs."""
    import duckdb

    starts = con.table("corr_span_keys").select("start_ns").to_arrow_table().column("start_ns").to_numpy()
    bounds = sorted({int(b) for b in starts[spans_per_range::spans_per_range]})  # the table is in start order
    spans = con.sql(queries.load("correlate_spans"))
    if not bounds:
        return [spans]
    start = duckdb.ColumnExpression("start_ns")
    ranges = [spans.filter(start < duckdb.ConstantExpression(bounds[0]))]
    for lo, hi in zip(bounds, bounds[1:]):
        ranges.append(spans.filter((start >= duckdb.ConstantExpression(lo)) & (start < duckdb.ConstantExpression(hi))))
    ranges.append(spans.filter((start >= duckdb.ConstantExpression(bounds[-1])) | start.isnull()))
    return ranges


def no_events_error(run_dir: Path, skipped: list[str]) -> DataError:
    """Why a run without kernel events cannot be correlated (`skipped`: what skip_bad left out)."""
    if any("/kernel_events/" in s for s in skipped):
        return DataError(f"{run_dir}: nothing to correlate: no kernel events left once the damaged files "
                         f"were skipped ({'; '.join(skipped)})", "repair those files, or leave that run out")
    return DataError(f"{run_dir}: nothing to correlate: no kernel events recorded "
                     "(kernel_events/*.parquet holds no rows)",
                     "no signal attached, or the cgroup filter matched nothing: see capability "
                     "and counters in its manifest.json; or leave that run out")


def _correlate_con(con, run_dir: Path, window_ms: int, skipped: list[str], sink, *, memory_limit: int | None,
                   temp_dir: Path, progress: Progress | None) -> dict:
    """Correlates the one run whose views `con` holds, slice by slice, handing every output table
    to `sink` (the outputs in order, each slice's rows after the last's); returns the counts.
    `skipped`: the files skip_bad left out so far, which may be why nothing is left."""
    con.execute("SET temp_directory = $dir", {"dir": str(temp_dir)})
    if memory_limit is not None:
        con.execute("SET memory_limit = $limit", {"limit": f"{memory_limit}B"})
    per_second = queries.run(con, "events_per_second")
    total = int(pc.sum(per_second.column("events")).as_py() or 0)
    if total == 0:
        raise no_events_error(run_dir, skipped)
    params = _params(window_ms, *WHOLE_RUN)
    _steps(con, params, PER_RUN)
    counts = {"matched": 0, "unmatched": 0, "spans": 0, "spans_enriched": 0, "tiers": dict.fromkeys(TIERS, 0)}
    done = 0
    if progress is not None:
        progress(run_dir, 0, total)
    ids = _ids_by_pref(con)
    for i, (ts_first, ts_last) in enumerate(plan_slices(per_second, slice_events(memory_limit))):
        bound = params | {"ts_first": ts_first, "ts_last": ts_last}
        events = queries.run(con, "correlate_events", {k: bound[k] for k in ("ts_first", "ts_last")})
        con.register("corr_events", events)  # the steps read the Arrow table in place
        _steps(con, bound, SLICE_STEPS, append=i > 0)
        candidates = con.table("corr_candidates").to_arrow_table()
        matched = int(pc.sum(pc.greater_equal(candidates.column("confidence"), ENRICH_MIN_CONFIDENCE)).as_py() or 0)
        counts["matched"] += matched
        counts["unmatched"] += events.num_rows - matched
        for tier, n in _count(candidates, "tier").items():
            counts["tiers"][tier] += n
        done += events.num_rows
        sink.add_slice(events, candidates, ids)
        if progress is not None:
            progress(run_dir, done, total)
    # every span with its matched events added up over the slices, a range of start_ns at a time
    # (the sort holds one range), read in batches
    _steps(con, params, AFTER_SLICES)
    con.execute("DROP VIEW temp.corr_spans")  # each range takes its name in turn (a view, not a temp view)
    for spans in _span_ranges(con, slice_events(memory_limit)):
        spans.create_view("corr_spans", replace=True)
        reader = con.sql(queries.load(OUTPUTS["enriched_spans.parquet"])).to_arrow_reader(ENRICH_BATCH_ROWS)
        for batch in reader:
            counts["spans"] += batch.num_rows
            counts["spans_enriched"] += int(pc.sum(pc.greater(batch.column("matched_events"), 0)).as_py() or 0)
            sink.add("enriched_spans.parquet", pa.Table.from_batches([batch], schema=reader.schema))
        if counts["spans"] == 0:  # no span at all: the file still gets the columns
            sink.add("enriched_spans.parquet", reader.schema.empty_table())
    return counts


def _correlate_one(run_dir: Path, window_ms: int, make_sink: Callable[[], object], *, skip_bad: bool,
                   offer_skip_bad: bool, memory_limit: str | int | None, progress: Progress | None):
    """Correlates one run directory into a sink of make_sink(); (summary, what the sink finished with)."""
    import duckdb

    from analyze.session import find_runs, open_runs

    run_dir = Path(run_dir)
    check_window(window_ms)
    limit = parse_memory_limit(memory_limit)
    found = find_runs([run_dir])
    if found != [run_dir]:  # pairs must never cross runs
        raise DataError(f"{run_dir} is not one run directory ({len(found)} runs below it)",
                        "pass a folder that holds manifest.json, or use correlate() for a runs root")
    runs = open_runs([run_dir], skip_bad=skip_bad, offer_skip_bad=offer_skip_bad)
    temp_dir = Path(tempfile.mkdtemp(prefix="sloan-correlate-"))  # where DuckDB spills, if it must

    def work(con) -> tuple[dict, object]:
        sink = make_sink()  # afresh when Runs.use runs the work again without a damaged file
        try:
            counts = _correlate_con(con, run_dir, window_ms, runs.skipped, sink, memory_limit=limit,
                                    temp_dir=temp_dir, progress=progress)
            return counts, sink.finish()
        except BaseException:
            sink.abort()
            raise

    try:
        counts, finished = runs.use(work)
    except duckdb.OutOfMemoryException as exc:
        raise DataError(f"{run_dir}: correlation ran out of memory "
                        f"({'memory limit ' + str(memory_limit) if limit else 'no memory limit set'}): "
                        f"{str(exc).splitlines()[0]}",
                        "pass a larger --memory-limit, or free memory on this host") from None
    finally:
        runs.con.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    row = runs.rows[0] if runs.rows else {}  # none when skip_bad left a damaged manifest out
    tiers = counts["tiers"]
    summary = RunCorrelation(
        run_dir=run_dir,
        events=counts["matched"] + counts["unmatched"],
        matched=counts["matched"],
        unmatched=counts["unmatched"],
        diagnostic=tiers["service_node"],
        spans=counts["spans"],
        spans_enriched=counts["spans_enriched"],
        tiers=tiers,
        state=row.get("state"),
        degraded=bool(row.get("degraded")),
        skipped=tuple(runs.skipped),
    )
    return summary, finished


def correlate_run(run_dir: Path, window_ms: int = DEFAULT_WINDOW_MS, *, skip_bad: bool = False,
                  offer_skip_bad: bool = False, memory_limit: str | int | None = None,
                  progress: Progress | None = None) -> Correlation:
    """Correlates one run directory; returns the output tables (in memory) without writing them.
    `skip_bad`, `offer_skip_bad`: as analyze.session.open_runs takes them; `memory_limit`: DuckDB's
    (a size such as '2GB'); `progress(run_dir, events done, events)` after each time slice."""
    summary, out = _correlate_one(run_dir, window_ms, _Tables, skip_bad=skip_bad, offer_skip_bad=offer_skip_bad,
                                  memory_limit=memory_limit, progress=progress)
    return Correlation(out["correlated.parquet"], out["enriched_spans.parquet"], out["unmatched.parquet"], summary)


def correlate(runs_paths: Iterable[Path], window_ms: int = DEFAULT_WINDOW_MS, write: bool = True, *,
              skip_bad: bool = False, memory_limit: str | int | None = None,
              progress: Progress | None = None) -> CorrelationSummary:
    """Correlates every run under `runs_paths`; with `write`, stores the outputs beside each run,
    streamed slice by slice (no output is held whole in memory). `skip_bad`: damaged files are
    left out (RunCorrelation.skipped names them), not an error. `memory_limit`: DuckDB's, a size
    such as '2GB' (it spills to a temporary folder beyond it; slices get smaller under a small
    one); `progress(run_dir, events done, events in the run)` after each time slice."""
    from analyze.session import find_runs

    check_window(window_ms)
    parse_memory_limit(memory_limit)
    results = []
    for run_dir in find_runs([Path(p) for p in runs_paths]):
        make_sink = (lambda d=run_dir: _Files(d)) if write else _Counted
        summary, written = _correlate_one(run_dir, window_ms, make_sink, skip_bad=skip_bad, offer_skip_bad=True,
                                          memory_limit=memory_limit, progress=progress)
        results.append(replace(summary, written=tuple(written)))
    return CorrelationSummary(window_ms, tuple(results))
