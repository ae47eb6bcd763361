"""sloan repro: how much key metrics vary across reruns. Exit codes as sloan compare's
(analyze/cli/compare.py): 0 ok, 1 a metric varies more than 10 % (with --check), 2 cannot judge."""

from __future__ import annotations

import sys

import click

from analyze.cli.compare import cannot_judge_on_error
from analyze.cli.options import (
    Output, command, emit_result, format_option, json_option, runs_option, skip_bad_option,
)
from runfmt.errors import ExitCode


@command()
@runs_option
@click.option("--check", is_flag=True,
              help="Exit 1 when a metric varies more than 10 % across reruns, 2 when none has two reruns.")
@json_option
@format_option
@skip_bad_option
@cannot_judge_on_error
def repro(runs_paths, check, json_out, out_format, skip_bad):
    """Coefficient of variation of TTFT p95, E2E p95, error rate and fault-phase TTFT
    p95 across reruns of the same scenario, tag, seed and profile; above 10 % is flagged.

    \b
    Example:
      sloan repro --runs runs/tag=main --check
    """
    from analyze.formatting import Grid, Styled, fmt
    from analyze.repro import reproducibility

    report = reproducibility(list(runs_paths), skip_bad=skip_bad)
    if not emit_result(report.to_dict(), json_out, out_format):
        t = Grid(f"reproducibility across reruns (flag: CV > {report.cv_gate:.0%})",
                 ["tag", "scenario", "seed", "profile", "metric", "runs", "mean", "CV", "flag"],
                 right={"seed", "runs", "mean", "CV"})
        for r in report.rows:
            cv = "n/a (< 2 runs)" if r.cv is None else f"{r.cv:.1%}"
            t.add_row(r.tag, r.scenario, r.seed, r.profile, r.label, r.runs, fmt(r.mean, r.unit), cv,
                      Styled("> 10 %", "bold red") if r.flagged else "")
        with Output(out_format) as out:
            out.table(t)
            for n in report.notes:
                out.line(f"note: {n}")
            out.line(f"{len(report.flagged)} of {len(report.rows)} metric(s) flagged.")
    if check:
        if report.flagged:
            sys.exit(ExitCode.USER)
        if not report.judged:
            sys.exit(ExitCode.CANNOT_JUDGE)
