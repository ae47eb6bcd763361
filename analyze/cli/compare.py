"""sloan compare / gate / repro: release comparison and the CI regression gate.

Registered on the `sloan` group in analyze/cli.py. Each command parses options, calls
one library function (analyze.compare, analyze.gate) and renders its result.

Exit codes of these commands: 0 ok / gate passed; 1 the gate found a regression (or,
with `repro --check`, a metric varies more than 10 %); 2 cannot judge: missing or bad
input (an unknown tag, a tag without runs, mixed profiles, missing data), an
exploratory comparison at the gate, or a usage error. Errors are printed like the
rest of sloan: `error: what failed` and the fix on the next line.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from analyze.cli.options import (
    Output, command, config_option, emit_result, format_option, format_option_with, json_option, load_config,
    profile_option, resamples_option, runs_option, scenario_option, seed_option, skip_bad_option, write_text,
)
from runfmt.console import print_error
from runfmt.errors import ExitCode, SloError


def cannot_judge_on_error(fn):
    """SloError -> the message and hint on stderr, exit 2 (cannot judge)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SloError as exc:
            print_error(exc)
            sys.exit(ExitCode.CANNOT_JUDGE)
    return wrapper


def comparison_tables(cmp):
    """The metric table and the run-count table of a comparison, as Grids (analyze/formatting.py)."""
    from analyze.formatting import Grid, diff_cells, value_cell

    several = len(cmp.tags) > 2
    columns = ["metric"] + [f"{tag}{' (ref)' if tag == cmp.reference else ''}" for tag in cmp.tags]
    left = {"metric"}
    for tag in cmp.tags[1:]:
        suffix = f" {tag}" if several else ""
        columns += [f"Δ{suffix}", f"CI95 Δ{suffix}", f"p MWU{suffix}", f"Cliff's δ{suffix}"]
        left.add(f"Cliff's δ{suffix}")
    t = Grid(f"{' vs '.join(cmp.tags)} · profile {cmp.profile} · median over runs", columns,
             right=set(columns) - left)
    for mc in cmp.metrics:
        row = [mc.metric.label] + [value_cell(mc, tag, cmp.runs_of(tag).runs) for tag in cmp.tags]
        for tag in cmp.tags[1:]:
            row += diff_cells(mc, tag)
        t.add_row(*row)
    tags = [tr.tag for tr in cmp.tag_runs]
    b = Grid("runs per scenario (class balance)", ["scenario", *tags], right=set(tags) - {"scenario"})
    for s in sorted({s for tr in cmp.tag_runs for s in tr.scenarios}):
        b.add_row(s, *(tr.scenarios.get(s, 0) for tr in cmp.tag_runs))
    if b.rows:
        b.sections.add(len(b.rows) - 1)
    b.add_row(f"all runs ({cmp.profile})", *(tr.runs for tr in cmp.tag_runs))
    return t, b


def _show_comparison(out, cmp) -> None:
    t, b = comparison_tables(cmp)
    out.line(cmp.rule)
    if cmp.exploratory:
        runs = ", ".join(f"{tr.tag} {tr.runs}" for tr in cmp.tag_runs)
        out.line(f"[bold yellow]EXPLORATORY[/]: fewer than {cmp.min_runs} runs per tag and profile ({runs}); "
                 "no distribution claim, never a release gate.", markup=True)
    out.table(t)
    out.table(b)
    out.line(f"CI95: bootstrap over runs ({cmp.resamples:,} resamples, seed {cmp.seed}, within scenario); "
             f"p: Mann-Whitney U, two-sided; Cliff's δ: negligible < 0.147 ≤ small < 0.33 ≤ medium < 0.474 ≤ large.")
    out.line(f"attribution: {cmp.attribution}")
    for n in cmp.notes:
        out.line(f"note: {n}")


_STATUS_STYLE = {"pass": "green", "fail": "bold red", "cannot_judge": "yellow"}


def _show_gate(out, result) -> None:
    """The gate's verdict, its checks and the comparison, for --format table and csv."""
    from analyze.formatting import Grid, Styled

    out.line(f"release gate: {result.candidate} against {result.base}: {result.verdict.replace('_', ' ').upper()}")
    out.line(f"{result.reason}. Exit code {result.exit_code}.")
    checks = Grid("checks", ["check", "result", "measured", "threshold", "note"])
    for c in result.checks:
        checks.add_row(c.name, Styled(c.status, _STATUS_STYLE.get(c.status, "")), c.measured, c.threshold, c.detail)
    out.table(checks)
    _show_comparison(out, result.comparison)


@command()
@click.argument("tags", nargs=-1, metavar="[TAG TAG [TAG]]")
@runs_option
@profile_option
@scenario_option
@click.option("--repo", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Git checkout whose `git tag` order ranks the tags (semver-ish order without it).")
@config_option
@seed_option
@resamples_option
@json_option
@format_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Also write one self-contained HTML page (opens offline): per metric the "
                                   "per-run values of each tag and the difference with its CI95.")
@skip_bad_option
@cannot_judge_on_error
def compare(tags, runs_paths, profile, scenarios, repo, config_path, seed, resamples, json_out, out_format,
            html_path, skip_bad):
    """Compare releases over their runs: per metric the median per tag, the difference
    with CI95, a Mann-Whitney U p-value and Cliff's delta; run counts and class balance.

    \b
    Without TAGs the baseline rule picks them: main vs the newest release candidate
    vs the previous stable tag (with no stable tag, the first GA anchor tag). With TAGs,
    the first is the reference. Fewer than 10 runs per tag and profile: exploratory.
    Examples:
      sloan compare main v0.2-rc --runs runs
      sloan compare --runs runs --repo .
      sloan compare main v0.2-rc --runs runs --html compare.html
    """
    from analyze.compare import compare_tags

    if len(tags) not in (0, 2, 3):
        raise click.UsageError(f"give two or three TAGs, or none for the baseline rule (got {len(tags)})")
    cmp = compare_tags(list(runs_paths), list(tags) or None, profile=profile, scenarios=tuple(scenarios),
                       repo=repo, config=load_config(config_path), seed=seed, resamples=resamples,
                       skip_bad=skip_bad)
    if html_path is not None:
        from analyze.html_report import compare_page

        page = compare_page(cmp, list(runs_paths))
        try:
            html_path.write_text(page)
        except OSError as exc:
            raise SloError(f"cannot write {html_path}: {exc.strerror}", "pass a writable path") from None
        click.echo(f"wrote {html_path} ({len(page.encode()) / 1e6:.1f} MB, {len(cmp.metrics)} metrics)", err=True)
    if emit_result(cmp.to_dict(), json_out, out_format):
        return
    with Output(out_format) as out:
        _show_comparison(out, cmp)


@command()
@runs_option
@click.option("--base", required=True, help="Tag to judge against (e.g. main, or the previous stable tag).")
@click.option("--candidate", required=True, help="Tag under judgement (e.g. v0.2-rc).")
@profile_option
@scenario_option
@config_option
@click.option("--allow-exploratory", is_flag=True,
              help="Judge a comparison with fewer than 10 runs per tag anyway (not for releases).")
@click.option("--summary", "summary_path", default="-", show_default=True, metavar="FILE",
              help="Markdown summary ('-': stdout, for CI logs); to a FILE, stdout gets one line "
                   "unless --format is given.")
@json_option
@format_option_with(default="markdown")
@seed_option
@resamples_option
@skip_bad_option
@cannot_judge_on_error
def gate(runs_paths, base, candidate, profile, scenarios, config_path, allow_exploratory, summary_path,
         json_out, out_format, seed, resamples, skip_bad):
    """CI regression gate: judge CANDIDATE against BASE over their runs.

    \b
    Fails (exit 1) when TTFT p95 regresses by more than gate.max_p95_regression_pct %
    with CI95 > 0 and a non-negligible Cliff's delta, when attribution precision or
    recall is below gate.min_precision / gate.min_recall, or when the recorder's
    overhead is above safety.max_overhead_pct. Exit 0: pass. Exit 2: cannot judge
    (missing data, or an exploratory comparison without --allow-exploratory).
    Example:
      sloan gate --runs runs --base main --candidate v0.2-rc --json gate.json
    """
    from analyze.gate import run_gate

    result = run_gate(list(runs_paths), base=base, candidate=candidate, config=load_config(config_path),
                      profile=profile, scenarios=tuple(scenarios), allow_exploratory=allow_exploratory,
                      seed=seed, resamples=resamples, skip_bad=skip_bad)
    from click.core import ParameterSource

    if summary_path != "-":
        write_text(Path(summary_path), result.to_markdown() + "\n")
    format_given = click.get_current_context().get_parameter_source("out_format") is not ParameterSource.DEFAULT
    if emit_result(result.to_dict(), json_out, out_format):
        pass
    elif summary_path != "-" and not format_given:
        click.echo(f"gate: {result.verdict} ({result.reason}); exit {result.exit_code}; summary {summary_path}")
    elif out_format == "markdown":
        click.echo(result.to_markdown())
    else:
        with Output(out_format) as out:
            _show_gate(out, result)
    sys.exit(result.exit_code)
