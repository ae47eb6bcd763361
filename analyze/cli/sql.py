"""sloan sql: SQL over the views of the runs, or an interactive shell."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import (
    Output, command, format_option_with, print_skipped, runs_option, skip_bad_option, write_text,
)
from runfmt.errors import SloError


@command()
@click.argument("query", required=False)
@runs_option
@format_option_with(extra=("parquet",))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result to this file instead of the terminal (needed for parquet; "
                   "--format table writes CSV).")
@skip_bad_option
@click.option("--named", "named", default=None, metavar="NAME",
              help="Run the named query sql/NAME.sql instead of QUERY (e.g. phase_summary).")
def sql(query: str | None, runs_paths: tuple[Path, ...], out_format: str, output: Path | None, skip_bad: bool,
        named: str | None) -> None:
    """Run SQL over the views; without QUERY, an interactive shell.

    \b
    CSV writes list, map and struct columns as JSON; json is one object per row (JSON lines).
    Examples:
      sloan sql "SELECT * FROM runs" --runs runs
      sloan sql "SELECT * FROM kernel_events WHERE signal = 'dns'" --format csv -o dns.csv
      sloan sql --named phase_summary --runs runs
    """
    import duckdb

    from analyze.export import write_result
    from analyze.formatting import Grid, render
    from analyze.session import open_runs

    if named is not None:
        from runfmt import queries

        query = queries.load(named)
    runs = open_runs(list(runs_paths), skip_bad=skip_bad, offer_skip_bad=True)
    runs.read_only()
    if query is None:
        print_skipped(runs.skipped)
        _shell(runs)
        return
    try:
        runs.check_reads_only(query)
        result = runs.use(lambda con: _result(con.sql(query)))
    except duckdb.Error as exc:
        raise SloError(f"query failed: {exc}", "views: kernel_events, kernel_hist, spans, requests, resources, labels, runs; try: DESCRIBE kernel_events") from None
    finally:  # also those a damaged data page left out, found while the query ran
        print_skipped(runs.skipped)
    if result is None:  # a statement without rows (CREATE, SET ...)
        return
    if out_format in ("table", "markdown") and output is None:
        with Output(out_format) as out:
            out.table(Grid.from_arrow(result))
        return
    if out_format == "markdown":
        write_text(output, render(Grid.from_arrow(result), "markdown"))
        return
    if out_format == "parquet" and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    text = write_result(result, out_format if out_format != "table" else "csv", output)
    if text is not None:
        click.echo(text, nl=False)


def _result(relation):
    """The rows of a statement as Arrow; None for a statement without rows."""
    return relation.to_arrow_table() if relation is not None else None


def _shell(runs) -> None:
    """A small SQL prompt: statements end with ';', .quit or Ctrl-D leaves."""
    import duckdb
    from rich.console import Console

    from analyze.formatting import Grid

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
            runs.check_reads_only(buf)
            known = len(runs.skipped)
            result = runs.use(lambda con, statement=buf: _result(con.sql(statement)))
            print_skipped(runs.skipped[known:])  # what --skip-bad left out while it ran
            if result is not None:
                with Output() as out:
                    out.table(Grid.from_arrow(result))
        except SloError as exc:
            c.print(f"[red]error:[/] {exc.message}", markup=True)
        except duckdb.Error as exc:
            c.print(f"[red]error:[/] {exc}")
        buf = ""
