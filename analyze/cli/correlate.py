"""sloan correlate: kernel events paired with spans, tier by tier."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from analyze.cli.options import (
    Output, _isatty, command, config_option, emit_result, format_option, json_option, load_config, print_skipped,
    runs_option, skip_bad_option,
)


def _memory_limit(ctx, param, value: str | None) -> str | None:
    if value is not None:
        from analyze.correlate import parse_memory_limit
        from runfmt.errors import ConfigError

        try:
            parse_memory_limit(value)
        except ConfigError as exc:
            raise click.BadParameter(exc.message) from None
    return value


class _Bar:
    """A progress bar on stderr for work that lasts (a second or more), on a terminal only."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.progress = None
        self.task = None

    def __call__(self, run_dir: Path, done: int, total: int) -> None:
        if self.progress is None:
            if time.monotonic() - self.started < 1.0:
                return
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("{task.completed:,} of {task.total:,} events"), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(f"correlating {run_dir.name}", total=total)
        self.progress.update(self.task, description=f"correlating {run_dir.name}", completed=done, total=total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@command()
@runs_option
@click.option("--window-ms", type=click.IntRange(1, 60_000), default=None,
              help="Farthest a kernel event may lie from a span (default: config correlation.window_ms, 500).")
@config_option
@click.option("--memory-limit", default=None, metavar="SIZE", callback=_memory_limit,
              help="Memory for DuckDB, e.g. 2GB or 1.5GiB (default: DuckDB's, 80% of RAM); beyond it DuckDB "
                   "spills to a temporary folder, and a long run is cut into smaller time slices.")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True,
              help="What runs the SQL of sql/correlate_*.sql. duckdb: in this process, a long run in time "
                   "slices; the fast choice on one machine. spark: the same SQL translated to Spark SQL "
                   "(sqlglot), one whole-run pass per run on Apache Spark, for a Spark cluster or to hold "
                   "one engine against the other: same files, same tiers and spans, but a JVM to start and "
                   "a job per step (1 M events: about 70 s on local[2] against DuckDB's 3 s). Needs pyspark "
                   "and Java 17: make setup installs both.")
@click.option("--master", default=None, metavar="URL",
              help="With --engine spark: the Spark master, e.g. local[4] (this machine, 4 threads) or "
                   "spark://host:7077 (a cluster, which must reach the run directories under the same "
                   "paths). Default: local[2].")
@json_option
@format_option
@skip_bad_option
def correlate(runs_paths: tuple[Path, ...], window_ms: int | None, config_path: Path | None,
              memory_limit: str | None, engine: str, master: str | None, json_out: str | None, out_format: str,
              skip_bad: bool) -> None:
    """Pair kernel events with spans, tier by tier, and enrich the spans.

    \b
    Tiers: trace_id 1.0, pod_pid 0.9 (100 ms), pod_conn 0.8 (250 ms), service_node 0.65
    (500 ms, diagnostic only). Writes beside each run: correlated.parquet,
    enriched_spans.parquet (confidence >= 0.7 only), unmatched.parquet.
    A long run is correlated in time slices, streamed into the files (--engine spark: in
    one pass per run); on a terminal a progress bar shows on stderr while that lasts.
    Example:
      sloan correlate --runs runs/tag=main --window-ms 500
      sloan correlate --runs runs/tag=soak --memory-limit 2GB
      sloan correlate --runs runs/tag=main --engine spark --master local[4]
    """
    from analyze.correlate import CONFIDENCE, ENRICH_MIN_CONFIDENCE, TIERS
    from analyze.formatting import Grid

    if engine == "spark" and memory_limit is not None:
        raise click.UsageError("--memory-limit is DuckDB's; Spark takes its memory from its own settings "
                               "(PYSPARK_SUBMIT_ARGS='--driver-memory 4g pyspark-shell')")
    if engine != "spark" and master is not None:
        raise click.UsageError("--master is for --engine spark")
    if window_ms is None:
        window_ms = load_config(config_path)["correlation"]["window_ms"]
    bar = _Bar() if _isatty(sys.stderr) else None
    try:
        if engine == "spark":
            from analyze.correlate_spark import DEFAULT_MASTER
            from analyze.correlate_spark import correlate as run_correlation

            summary = run_correlation(list(runs_paths), window_ms=window_ms, skip_bad=skip_bad,
                                      master=master or DEFAULT_MASTER, progress=bar)
        else:
            from analyze.correlate import correlate as run_correlation

            summary = run_correlation(list(runs_paths), window_ms=window_ms, skip_bad=skip_bad,
                                      memory_limit=memory_limit, progress=bar)
    finally:
        if bar is not None:
            bar.stop()
    print_skipped(summary.skipped)
    if emit_result(summary.to_dict(), json_out, out_format):
        return
    t = Grid(f"correlation, window {summary.window_ms} ms, {len(summary.runs)} run(s)",
             ["tier", "confidence", "events", "role"], right={"confidence", "events"})
    tiers = summary.tiers
    for tier in TIERS:
        diagnostic = CONFIDENCE[tier] < ENRICH_MIN_CONFIDENCE
        role = "diagnostic only: unmatched.parquet" if diagnostic else "enriches spans"
        t.add_row(tier, CONFIDENCE[tier], tiers[tier], role)
    t.add_row("no candidate", None, summary.unmatched - summary.diagnostic, "unmatched.parquet", end_section=True)
    t.add_row("all events", None, summary.events, f"{summary.matched:,} matched, {summary.unmatched:,} unmatched")
    with Output(out_format) as out:
        out.table(t)
        out.line(f"spans enriched: {summary.spans_enriched:,} of {summary.spans:,}. "
                 "Wrote correlated.parquet, enriched_spans.parquet, unmatched.parquet beside each run.")
