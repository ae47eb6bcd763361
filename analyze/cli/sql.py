"""sloan sql: SQL over the views of the runs, or an interactive shell."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import command, runs_option, skip_bad_option
from runfmt.console import render_arrow
from runfmt.errors import SloError

FORMATS = ("table", "csv", "json", "parquet")


@command()
@click.argument("query", required=False)
@runs_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result to this file instead of the terminal (needed for parquet).")
@skip_bad_option
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
    runs.read_only()
    if query is None:
        _shell(runs)
        return
    runs.check_reads_only(query)
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


def _shell(runs) -> None:
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
            runs.check_reads_only(buf)
            relation = runs.con.sql(buf)
            if relation is not None:
                c.print(render_arrow(relation.to_arrow_table()))
        except SloError as exc:
            c.print(f"[red]error:[/] {exc.message}", markup=True)
        except duckdb.Error as exc:
            c.print(f"[red]error:[/] {exc}")
        buf = ""
