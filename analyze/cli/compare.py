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
    command, config_option, console, emit_json, json_option, load_config, profile_option, resamples_option,
    runs_option, scenario_option, seed_option, skip_bad_option, write_text,
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
    """The metric table and the run-count table of a comparison, as rich Tables."""
    from rich.table import Table

    from analyze.formatting import diff_cells, value_cell

    t = Table(title=f"{' vs '.join(cmp.tags)} · profile {cmp.profile} · median over runs",
              title_justify="left")
    t.add_column("metric")
    for tag in cmp.tags:
        t.add_column(f"{tag}{' (ref)' if tag == cmp.reference else ''}", justify="right")
    several = len(cmp.tags) > 2
    for tag in cmp.tags[1:]:
        suffix = f" {tag}" if several else ""
        t.add_column(f"Δ{suffix}", justify="right")
        t.add_column(f"CI95 Δ{suffix}", justify="right")
        t.add_column(f"p MWU{suffix}", justify="right")
        t.add_column(f"Cliff's δ{suffix}", justify="left")
    for mc in cmp.metrics:
        row = [mc.metric.label] + [value_cell(mc, tag, cmp.runs_of(tag).runs) for tag in cmp.tags]
        for tag in cmp.tags[1:]:
            row += diff_cells(mc, tag)
        t.add_row(*row)
    b = Table(title="runs per scenario (class balance)", title_justify="left")
    b.add_column("scenario")
    for tr in cmp.tag_runs:
        b.add_column(tr.tag, justify="right")
    for s in sorted({s for tr in cmp.tag_runs for s in tr.scenarios}):
        b.add_row(s, *(str(tr.scenarios.get(s, 0)) for tr in cmp.tag_runs))
    b.add_section()
    b.add_row(f"all runs ({cmp.profile})", *(str(tr.runs) for tr in cmp.tag_runs))
    return t, b


def _print_comparison(c, cmp) -> None:
    t, b = comparison_tables(cmp)
    c.print(cmp.rule, soft_wrap=True, markup=False)
    if cmp.exploratory:
        runs = ", ".join(f"{tr.tag} {tr.runs}" for tr in cmp.tag_runs)
        c.print(f"[bold yellow]EXPLORATORY[/]: fewer than {cmp.min_runs} runs per tag and profile ({runs}); "
                "no distribution claim, never a release gate.", soft_wrap=True)
    c.print(t)
    c.print(b)
    c.print(f"CI95: bootstrap over runs ({cmp.resamples:,} resamples, seed {cmp.seed}, within scenario); "
            f"p: Mann-Whitney U, two-sided; Cliff's δ: negligible < 0.147 ≤ small < 0.33 ≤ medium < 0.474 ≤ large.",
            soft_wrap=True, markup=False)
    c.print(f"attribution: {cmp.attribution}", soft_wrap=True, markup=False)
    for n in cmp.notes:
        c.print(f"note: {n}", soft_wrap=True, markup=False)


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
@skip_bad_option
@cannot_judge_on_error
def compare(tags, runs_paths, profile, scenarios, repo, config_path, seed, resamples, json_out, skip_bad):
    """Compare releases over their runs: per metric the median per tag, the difference
    with CI95, a Mann-Whitney U p-value and Cliff's delta; run counts and class balance.

    \b
    Without TAGs the baseline rule picks them: main vs the newest release candidate
    vs the previous stable tag (with no stable tag, the first GA anchor tag). With TAGs,
    the first is the reference. Fewer than 10 runs per tag and profile: exploratory.
    Examples:
      sloan compare main v0.2-rc --runs runs
      sloan compare --runs runs --repo .
    """
    from analyze.compare import compare_tags

    if len(tags) not in (0, 2, 3):
        raise click.UsageError(f"give two or three TAGs, or none for the baseline rule (got {len(tags)})")
    cmp = compare_tags(list(runs_paths), list(tags) or None, profile=profile, scenarios=tuple(scenarios),
                       repo=repo, config=load_config(config_path), seed=seed, resamples=resamples,
                       skip_bad=skip_bad)
    if emit_json(cmp.to_dict(), json_out):
        return
    _print_comparison(console(), cmp)


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
              help="Markdown summary ('-': stdout, for CI logs).")
@json_option
@seed_option
@resamples_option
@skip_bad_option
@cannot_judge_on_error
def gate(runs_paths, base, candidate, profile, scenarios, config_path, allow_exploratory, summary_path,
         json_out, seed, resamples, skip_bad):
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
    if not emit_json(result.to_dict(), json_out) and summary_path == "-":
        click.echo(result.to_markdown())
    elif summary_path != "-":
        write_text(Path(summary_path), result.to_markdown() + "\n")
    if summary_path not in (None, "-"):
        click.echo(f"gate: {result.verdict} ({result.reason}); exit {result.exit_code}; summary {summary_path}")
    sys.exit(result.exit_code)
