"""sloan correlate: kernel events paired with spans, tier by tier."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import (
    command, config_option, console, emit_json, json_option, load_config, runs_option,
)


@command()
@runs_option
@click.option("--window-ms", type=click.IntRange(1, 60_000), default=None,
              help="Farthest a kernel event may lie from a span (default: config correlation.window_ms, 500).")
@config_option
@json_option
def correlate(runs_paths: tuple[Path, ...], window_ms: int | None, config_path: Path | None,
              json_out: str | None) -> None:
    """Pair kernel events with spans, tier by tier, and enrich the spans.

    \b
    Tiers: trace_id 1.0, pod_pid 0.9 (100 ms), pod_conn 0.8 (250 ms), service_node 0.65
    (500 ms, diagnostic only). Writes beside each run: correlated.parquet,
    enriched_spans.parquet (confidence >= 0.7 only), unmatched.parquet.
    Example:
      sloan correlate --runs runs/tag=main --window-ms 500
    """
    from rich.table import Table

    from analyze.correlate import CONFIDENCE, ENRICH_MIN_CONFIDENCE, TIERS
    from analyze.correlate import correlate as run_correlation
    if window_ms is None:
        window_ms = load_config(config_path)["correlation"]["window_ms"]
    summary = run_correlation(list(runs_paths), window_ms=window_ms)
    if emit_json(summary.to_dict(), json_out):
        return
    t = Table(title=f"correlation, window {summary.window_ms} ms, {len(summary.runs)} run(s)",
              title_justify="left")
    for name, justify in (("tier", "left"), ("confidence", "right"), ("events", "right"), ("", "left")):
        t.add_column(name, justify=justify)
    tiers = summary.tiers
    for tier in TIERS:
        diagnostic = CONFIDENCE[tier] < ENRICH_MIN_CONFIDENCE
        role = "diagnostic only: unmatched.parquet" if diagnostic else "enriches spans"
        t.add_row(tier, str(CONFIDENCE[tier]), f"{tiers[tier]:,}", role)
    t.add_row("no candidate", "", f"{summary.unmatched - summary.diagnostic:,}", "unmatched.parquet",
              end_section=True)
    t.add_row("all events", "", f"{summary.events:,}",
              f"{summary.matched:,} matched, {summary.unmatched:,} unmatched")
    c = console()
    c.print(t)
    c.print(f"spans enriched: {summary.spans_enriched:,} of {summary.spans:,}. "
            "Wrote correlated.parquet, enriched_spans.parquet, unmatched.parquet beside each run.", soft_wrap=True)
