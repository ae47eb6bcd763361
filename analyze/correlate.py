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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

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

# (query, temp table it becomes, parameters it binds), in order
STEPS = (
    ("correlate_events", "corr_events", ()),
    ("correlate_spans", "corr_spans", ()),
    ("correlate_candidates", "corr_candidates", ("window_ms", *(f"conf_{t}" for t in CONFIDENCE))),
    ("correlate_best", "corr_best", ("enrich_min",)),
)
# output file -> query
OUTPUTS = {
    "correlated.parquet": "correlate_matched",
    "enriched_spans.parquet": "correlate_enrich",
    "unmatched.parquet": "correlate_unmatched",
}


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

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "events": self.events, "matched": self.matched,
                "unmatched": self.unmatched, "diagnostic": self.diagnostic, "spans": self.spans,
                "spans_enriched": self.spans_enriched, "tiers": dict(self.tiers),
                "written": [str(p) for p in self.written]}


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

    def to_dict(self) -> dict:
        return {"window_ms": self.window_ms, "events": self.events, "matched": self.matched,
                "unmatched": self.unmatched, "diagnostic": self.diagnostic, "spans": self.spans,
                "spans_enriched": self.spans_enriched, "tiers": self.tiers,
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


def prepare(con, window_ms: int = DEFAULT_WINDOW_MS) -> None:
    """Runs the steps into temp tables corr_events, corr_spans, corr_candidates, corr_best.

    `con` holds the views of exactly one run (analyze.session.open_runs on one run directory).
    """
    # the tiers' confidences live here only; the SQL receives them as parameters
    params = {"window_ms": check_window(window_ms), "enrich_min": ENRICH_MIN_CONFIDENCE,
              **{f"conf_{tier}": c for tier, c in CONFIDENCE.items()}}
    for name, table, wanted in STEPS:
        # the table name comes from STEPS, never from input; DuckDB binds the parameters
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS\n{queries.load(name)}",
                    {k: params[k] for k in wanted})


def _count(table: pa.Table, column: str) -> dict[str, int]:
    counts = pc.value_counts(table.column(column)).to_pylist() if table.num_rows else []
    return {c["values"]: c["counts"] for c in counts if c["values"] is not None}


def correlate_run(run_dir: Path, window_ms: int = DEFAULT_WINDOW_MS) -> Correlation:
    """Correlates one run directory; returns the output tables without writing them."""
    from analyze.session import find_runs, open_runs

    run_dir = Path(run_dir)
    found = find_runs([run_dir])
    if found != [run_dir]:  # pairs must never cross runs
        raise DataError(f"{run_dir} is not one run directory ({len(found)} runs below it)",
                        "pass a folder that holds manifest.json, or use correlate() for a runs root")
    runs = open_runs([run_dir])
    try:
        if runs.con.execute("SELECT count(*) FROM kernel_events").fetchone()[0] == 0:
            raise DataError(f"{run_dir}: nothing to correlate: no kernel events recorded "
                            "(kernel_events/*.parquet holds no rows)",
                            "no signal attached, or the cgroup filter matched nothing: see capability "
                            "and counters in its manifest.json; or leave that run out")
        prepare(runs.con, window_ms)
        out = {file: queries.run(runs.con, name) for file, name in OUTPUTS.items()}
    finally:
        runs.con.close()
    correlated = out["correlated.parquet"]
    enriched = out["enriched_spans.parquet"]
    unmatched = out["unmatched.parquet"]
    tiers = dict.fromkeys(TIERS, 0) | _count(correlated, "tier") | _count(unmatched, "tier")
    summary = RunCorrelation(
        run_dir=run_dir,
        events=correlated.num_rows + unmatched.num_rows,
        matched=correlated.num_rows,
        unmatched=unmatched.num_rows,
        diagnostic=tiers["service_node"],
        spans=enriched.num_rows,
        spans_enriched=int(pc.sum(pc.greater(enriched.column("matched_events"), 0)).as_py() or 0),
        tiers=tiers,
    )
    return Correlation(correlated, enriched, unmatched, summary)


def correlate(runs_paths: Iterable[Path], window_ms: int = DEFAULT_WINDOW_MS, write: bool = True
              ) -> CorrelationSummary:
    """Correlates every run under `runs_paths`; with `write`, stores the outputs beside each run."""
    from analyze.session import find_runs
    from runfmt.writer import write_table_atomic

    check_window(window_ms)
    results = []
    for run_dir in find_runs([Path(p) for p in runs_paths]):
        result = correlate_run(run_dir, window_ms)
        written: list[Path] = []
        if write:
            tables = {"correlated.parquet": result.correlated, "enriched_spans.parquet": result.enriched_spans,
                      "unmatched.parquet": result.unmatched}
            for file, table in tables.items():
                write_table_atomic(table, run_dir / file)
                written.append(run_dir / file)
        results.append(replace(result.summary, written=tuple(written)))
    return CorrelationSummary(window_ms, tuple(results))
