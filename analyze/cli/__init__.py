"""sloan: the analyzer's command line. Parses options, calls one library
function, renders the result; errors are translated here and only here."""

from __future__ import annotations

import click

from runfmt.console import ErrorGroup


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


# each command lives in its own module of this package
from analyze.cli.compare import compare, gate  # noqa: E402
from analyze.cli.correlate import correlate  # noqa: E402
from analyze.cli.repro import repro  # noqa: E402
from analyze.cli.score import report, score  # noqa: E402
from analyze.cli.scrub import scrub  # noqa: E402
from analyze.cli.slo import attribute, slo  # noqa: E402
from analyze.cli.sql import sql  # noqa: E402

for _command in (sql, correlate, slo, attribute, score, report, compare, gate, repro, scrub):
    main.add_command(_command)
