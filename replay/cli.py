"""slocap lab: the incident lab's command line, added to slocap through the
entry point "slocap.commands" (pyproject.toml). Parses options, calls the
runner, renders its progress and result."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from runfmt.errors import ExitCode


@click.group()
def lab() -> None:
    """The incident lab: seeded load, really injected faults, labelled runs.

    \b
    slocap lab run --scenario dns_latency --reps 3 --tag main --profile smoke --out runs
    slocap lab run --scenario all --profile full --tag v0.2-rc --out runs
    slocap lab sweep --out build/sweep    every fault at three settings (resumable)
    slocap lab cleanup          remove what a killed run left behind
    """


@lab.command("run")
@click.option("--scenario", "scenarios", multiple=True, required=True,
              help="Scenario name (repeatable), or 'all'. See 'slocap lab list'.")
@click.option("--reps", type=click.IntRange(min=1), default=1, show_default=True, help="Runs per scenario.")
@click.option("--tag", required=True, help="Release tag the runs belong to (e.g. main, v0.2-rc).")
@click.option("--profile", type=click.Choice(["smoke", "full"]), default="smoke", show_default=True,
              help="Phase lengths: smoke 15/15/10 s; full 10/10/5 min (baseline/fault/recovery).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Runs root.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the load and every draw.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON config merged over config/defaults.json.")
@click.option("--lab-index", type=click.IntRange(0, 99), default=0, show_default=True,
              help="Which lab on this host (subnet 198.18.(100+N).0/24): two labs need two indexes.")
@click.option("--fault", "fault_settings", multiple=True, metavar="SCENARIO.PARAM=VALUE",
              help="A fault parameter (repeatable), e.g. dns_latency.ms=120; over config lab.faults. "
                   "It applies wherever the scenario runs, alone or in a mixed pair. See 'slocap lab list'.")
def lab_run(scenarios: tuple[str, ...], reps: int, tag: str, profile: str, out: Path, seed: int,
            config_path: Path | None, lab_index: int, fault_settings: tuple[str, ...]) -> None:
    """Run scenarios in the lab; one labelled run directory per rep.

    \b
    The fault's parameters go into labels.parquet (column intensity) and the manifest
    (fault). Example, a milder DNS fault:
      slocap lab run --scenario dns_latency --fault dns_latency.ms=120 --tag main --out runs
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from capture.preflight import check_host
    from replay.runner import LabOptions, run_lab, scenario_names
    from runfmt.config import load_config

    names = scenario_names() if "all" in scenarios else list(scenarios)
    opts = LabOptions(scenarios=names, reps=reps, tag=tag, profile=profile, runs_root=out,
                      config=load_config(config_path), seed=seed, lab_index=lab_index,
                      fault_params=_fault_params(fault_settings))
    check_host("core")
    # SIGTERM unwinds like Ctrl-C; SIGINT too even when started with it ignored
    # (a background job of a non-interactive shell), so the lab is always torn down
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console = Console(stderr=True, highlight=False)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, disable=not console.is_terminal)
    tasks: dict = {}

    def on_progress(p) -> None:
        key = (p.scenario, p.rep)
        if key not in tasks:
            tasks[key] = progress.add_task("", total=None)
        progress.update(tasks[key], description=f"{p.scenario} {p.rep}/{p.reps} [{p.phase}]",
                        completed=p.requests_done, total=p.requests_total or None)

    try:
        with progress:
            runs = run_lab(opts, on_progress)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] the lab was cleaned up; the last run says complete: false")
        sys.exit(ExitCode.USER)
    c = Console(highlight=False)
    for r in runs:
        c.print(f"{r.scenario} rep {r.rep}: {r.summary.render()}  → {r.run_dir}", soft_wrap=True)


@lab.command("sweep")
@click.option("--reps", type=click.IntRange(min=1), default=7, show_default=True,
              help="Runs per fault setting (baseline: 3x, mixed pairs: 1x).")
@click.option("--tag", default="main", show_default=True, help="Release tag the runs belong to.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Runs root; runs already there count, so a cut sweep resumes.")
@click.option("--scenario", "scenarios", multiple=True, help="Only these scenarios (repeatable).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the load and every draw.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON config merged over config/defaults.json.")
@click.option("--lab-index", type=click.IntRange(0, 99), default=0, show_default=True,
              help="Which lab on this host (subnet 198.18.(100+N).0/24).")
@click.option("--dry-run", is_flag=True, help="Print what is missing and stop.")
def lab_sweep(reps: int, tag: str, out: Path, scenarios: tuple[str, ...], seed: int, config_path: Path | None,
              lab_index: int, dry_run: bool) -> None:
    """Every fault at three settings, mild to severe (smoke profile), plus baselines and
    mixed pairs: the labelled set behind per-setting recall (replay/sweep.py).

    \b
    Resumes: settings that already have --reps complete runs under --out are skipped.
    With 7 reps: 9 faults x 3 settings, 21 baselines, 4 mixed pairs x 7: about 3 h.
      slocap lab sweep --out build/sweep --dry-run
      slocap lab sweep --out build/sweep && sloan score --runs build/sweep --split intensity
    """
    from capture.preflight import check_host
    from replay.runner import LabOptions, run_lab
    from replay.sweep import missing, plan
    from runfmt.config import load_config

    todo = [(step, missing(step, out, tag)) for step in plan(reps, list(scenarios) or None)]
    left = sum(n for _, n in todo)
    click.echo(f"sweep into {out}: {left} run(s) to go of {sum(s.reps for s, _ in todo)} "
               f"(about {left * 55 / 3600:.1f} h at ~55 s a smoke run)")
    for step, n in todo:
        if n:
            click.echo(f"  {step.describe()}: {n} of {step.reps}")
    if dry_run or not left:
        return
    check_host("core")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = load_config(config_path)
    try:
        for step, n in todo:
            if not n:
                continue
            opts = LabOptions(scenarios=[step.scenario], reps=n, tag=tag, profile="smoke", runs_root=out,
                              config=config, seed=seed, lab_index=lab_index,
                              fault_params={step.scenario: step.params} if step.params else {})
            for r in run_lab(opts):
                click.echo(f"{step.describe()} rep {r.rep}: {r.summary.render()}  → {r.run_dir}")
    except KeyboardInterrupt:
        click.echo("interrupted: the lab was cleaned up; run the same command again to resume", err=True)
        sys.exit(ExitCode.USER)


def _fault_params(settings: tuple[str, ...]) -> dict[str, dict]:
    """--fault SCENARIO.PARAM=VALUE, each a number where it reads as one."""
    out: dict[str, dict] = {}
    for text in settings:
        key, sep, value = text.partition("=")
        scenario, dot, param = key.partition(".")
        if not (sep and dot and scenario and param and value):
            raise click.BadParameter(f"{text!r}: write SCENARIO.PARAM=VALUE, e.g. dns_latency.ms=120",
                                     param_hint="--fault")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                continue
        out.setdefault(scenario, {})[param] = value
    return out


@lab.command("list")
def lab_list() -> None:
    """Each scenario: the fault domain it labels, its target and its parameters."""
    from rich.console import Console
    from rich.table import Table

    from replay.faults import MIXED, SCENARIOS
    from replay.runner import BASELINE

    t = Table("scenario", "domain", "target", "parameters (defaults)", title_justify="left")
    t.add_row(BASELINE, "none", "", "no fault")
    for s in SCENARIOS.values():
        t.add_row(s.name, s.domain, s.target, ", ".join(f"{k}={v}" for k, v in s.defaults.items()))
    for name, parts in MIXED.items():
        t.add_row(name, " + ".join(SCENARIOS[p].domain for p in parts),
                  " + ".join(SCENARIOS[p].target for p in parts), "each part's, at once")
    Console(highlight=False, width=200 if not Console().is_terminal else None).print(t)


@lab.command("cleanup")
def lab_cleanup() -> None:
    """Remove namespaces, bridges, /etc/netns entries and cgroups a killed lab left."""
    from replay.runner import stop_orphan_recorders
    from replay.topology import cleanup

    removed = stop_orphan_recorders() + cleanup()
    click.echo("\n".join(removed) if removed else "nothing to clean up")
