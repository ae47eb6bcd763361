"""sloan repro: how much key metrics vary across reruns. Exit codes as sloan compare's
(analyze/cli/compare.py): 0 ok, 1 a metric varies more than 10 % (with --check), 2 cannot judge."""

from __future__ import annotations

import sys

import click

from analyze.cli.compare import cannot_judge_on_error
from analyze.cli.options import (
    command, console, emit_json, json_option, runs_option, skip_bad_option,
)
from runfmt.errors import ExitCode


@command()
@runs_option
@click.option("--check", is_flag=True,
              help="Exit 1 when a metric varies more than 10 % across reruns, 2 when none has two reruns.")
@json_option
@skip_bad_option
@cannot_judge_on_error
def repro(runs_paths, check, json_out, skip_bad):
    """Coefficient of variation of TTFT p95, E2E p95, error rate and fault-phase TTFT
    p95 across reruns of the same scenario, tag, seed and profile; above 10 % is flagged.

    \b
    Example:
      sloan repro --runs runs/tag=main --check
    """
    from rich.table import Table

    from analyze.formatting import fmt
    from analyze.repro import reproducibility

    report = reproducibility(list(runs_paths), skip_bad=skip_bad)
    if not emit_json(report.to_dict(), json_out):
        c = console()
        t = Table(title=f"reproducibility across reruns (flag: CV > {report.cv_gate:.0%})", title_justify="left")
        for name, justify in (("tag", "left"), ("scenario", "left"), ("seed", "right"), ("profile", "left"),
                              ("metric", "left"), ("runs", "right"), ("mean", "right"), ("CV", "right"),
                              ("", "left")):
            t.add_column(name, justify=justify)
        for r in report.rows:
            cv = "n/a (< 2 runs)" if r.cv is None else f"{r.cv:.1%}"
            t.add_row(r.tag, r.scenario, "" if r.seed is None else str(r.seed), r.profile, r.label,
                      str(r.runs), fmt(r.mean, r.unit), cv, "[bold red]> 10 %[/]" if r.flagged else "")
        c.print(t)
        for n in report.notes:
            c.print(f"note: {n}", soft_wrap=True, markup=False)
        c.print(f"{len(report.flagged)} of {len(report.rows)} metric(s) flagged.", markup=False)
    if check:
        if report.flagged:
            sys.exit(ExitCode.USER)
        if not report.judged:
            sys.exit(ExitCode.CANNOT_JUDGE)
