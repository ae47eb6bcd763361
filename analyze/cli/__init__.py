"""sloan: the analyzer's command line. Parses options, calls one library
function, renders the result; errors are translated here and only here."""

from __future__ import annotations

import sys

import click

from runfmt.console import ErrorGroup, print_error
from runfmt.errors import ExitCode, SloError


class SloanGroup(ErrorGroup):
    """ErrorGroup, and a DuckDB error that no library function turned into a SloError
    (analyze.session.Runs.use names damaged files) as one line and exit 2, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            duckdb = sys.modules.get("duckdb")  # imported only by commands that query
            if duckdb is None or not isinstance(exc, duckdb.Error):
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            print_error(SloError(f"internal error: DuckDB {type(exc).__name__}: {first}",
                                 "a bug in sloan: please report it with the command that caused it"))
            sys.exit(ExitCode.INTERNAL)


@click.group(cls=SloanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-slo-ebpf-toolkit")
def main() -> None:
    """Analyze run directories recorded by slocap, offline, with DuckDB.

    \b
    Views: kernel_events, kernel_hist, spans, requests, resources, labels (each with
    tag, scenario, run from the folder names) and runs (one row per manifest).
    Example:
      sloan sql "SELECT signal, count(*) FROM kernel_events GROUP BY 1" --runs runs
    """


# each command lives in its own module of this package
from analyze.cli.compare import compare, gate  # noqa: E402
from analyze.cli.correlate import correlate  # noqa: E402
from analyze.cli.export import export  # noqa: E402
from analyze.cli.repro import repro  # noqa: E402
from analyze.cli.rules import rules  # noqa: E402
from analyze.cli.score import report, score  # noqa: E402
from analyze.cli.scrub import scrub  # noqa: E402
from analyze.cli.slo import attribute, slo  # noqa: E402
from analyze.cli.sql import sql  # noqa: E402

for _command in (sql, correlate, slo, attribute, score, report, compare, gate, repro, scrub, rules, export):
    main.add_command(_command)
