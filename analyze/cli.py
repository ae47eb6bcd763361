"""sloan: the analyzer's command line. Parses options, calls one library
function, renders the result; errors are translated here and only here."""

from __future__ import annotations

from pathlib import Path

import click

from runfmt.console import ErrorGroup, render_arrow
from runfmt.errors import SloError

FORMATS = ("table", "csv", "json", "parquet")


@click.group(cls=ErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-slo-ebpf-toolkit")
def main() -> None:
    """Analyze run directories recorded by slocap, offline, with DuckDB.

    \b
    Views: kernel_events, kernel_hist, spans, requests, resources, labels (each with
    tag, scenario, run from the folder names) and runs (one row per manifest).
    Example:
      sloan sql "SELECT signal, count(*) FROM kernel_events GROUP BY 1" --runs runs
    """


@main.command()
@click.argument("query", required=False)
@click.option("--runs", "runs_paths", multiple=True, type=click.Path(path_type=Path),
              default=[Path("runs")], show_default=True,
              help="Run directory or runs root (repeatable); every run below it is opened.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result to this file instead of the terminal (needed for parquet).")
@click.option("--skip-bad", is_flag=True, help="Skip corrupt or incomplete files, name them, open the rest.")
@click.option("--named", "named", default=None, metavar="NAME",
              help="Run the named query sql/NAME.sql instead of QUERY (e.g. phase_summary).")
def sql(query: str | None, runs_paths: tuple[Path, ...], fmt: str, output: Path | None, skip_bad: bool,
        named: str | None) -> None:
    """Run SQL over the views; without QUERY, an interactive shell.

    \b
    Examples:
      sloan sql "SELECT * FROM runs" --runs runs
      sloan sql "SELECT * FROM kernel_events WHERE signal = 'dns'" --format csv -o dns.csv
      sloan sql --named phase_summary --runs runs
    """
    import duckdb
    from rich.console import Console
    from rich.markup import escape

    from analyze.export import write_result
    from analyze.session import open_runs

    if named is not None:
        from runfmt import queries

        query = queries.load(named)
    runs = open_runs(list(runs_paths), skip_bad=skip_bad, offer_skip_bad=True)
    err = Console(stderr=True, highlight=False)
    for s in runs.skipped:
        err.print(f"[yellow]skipped:[/] {escape(s)}", soft_wrap=True)
    if query is None:
        _shell(runs.con)
        return
    try:
        relation = runs.con.sql(query)
        result = relation.to_arrow_table() if relation is not None else None
    except duckdb.Error as exc:
        raise SloError(f"query failed: {exc}", "views: kernel_events, kernel_hist, spans, requests, resources, labels, runs; try: DESCRIBE kernel_events") from None
    if result is None:  # a statement without rows (CREATE, SET ...)
        return
    if fmt == "table" and output is None:
        Console(highlight=False).print(render_arrow(result))
        return
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    text = write_result(result, fmt if fmt != "table" else "csv", output)
    if text is not None:
        click.echo(text, nl=False)


def _shell(con) -> None:
    """A small SQL prompt: statements end with ';', .quit or Ctrl-D leaves."""
    import duckdb
    from rich.console import Console

    c = Console(highlight=False)
    c.print("sloan SQL shell: views kernel_events, kernel_hist, spans, requests, resources, labels, runs.\n"
            "End statements with ';'. .quit to leave.")
    buf = ""
    while True:
        try:
            line = input("sloan> " if not buf else "  ...> ")
        except EOFError:
            break
        if line.strip() in (".quit", ".exit") and not buf:
            break
        buf += line + "\n"
        if not buf.strip().endswith(";"):
            continue
        try:
            relation = con.sql(buf)
            if relation is not None:
                c.print(render_arrow(relation.to_arrow_table()))
        except duckdb.Error as exc:
            c.print(f"[red]error:[/] {exc}")
        buf = ""


@main.command()
@click.argument("runs_paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN...")
@click.option("--window-ms", type=click.IntRange(1, 60_000), default=None,
              help="Farthest a kernel event may lie from a span (default: config correlation.window_ms, 500).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON config merged over config/defaults.json.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def correlate(runs_paths: tuple[Path, ...], window_ms: int | None, config_path: Path | None,
              as_json: bool) -> None:
    """Pair kernel events with spans, tier by tier, and enrich the spans.

    \b
    Tiers: trace_id 1.0, pod_pid 0.9 (100 ms), pod_conn 0.8 (250 ms), service_node 0.65
    (500 ms, diagnostic only). Writes beside each run: correlated.parquet,
    enriched_spans.parquet (confidence >= 0.7 only), unmatched.parquet.
    Example:
      sloan correlate runs/tag=main --window-ms 500
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from analyze.correlate import CONFIDENCE, ENRICH_MIN_CONFIDENCE, TIERS
    from analyze.correlate import correlate as run_correlation
    from runfmt.config import load_config

    if window_ms is None:
        window_ms = load_config(config_path)["correlation"]["window_ms"]
    summary = run_correlation(list(runs_paths), window_ms=window_ms)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
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
    c = Console(highlight=False)
    c.print(t)
    c.print(f"spans enriched: {summary.spans_enriched:,} of {summary.spans:,}. "
            "Wrote correlated.parquet, enriched_spans.parquet, unmatched.parquet beside each run.", soft_wrap=True)


# commands that live in their own modules, registered here
from analyze.cli_compare import compare, gate, repro  # noqa: E402
from analyze.cli_score import attribute, report, score, slo  # noqa: E402

for _command in (slo, attribute, score, report, compare, gate, repro):
    main.add_command(_command)
