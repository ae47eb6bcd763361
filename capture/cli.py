"""slocap: the recorder's command line. Parses options, calls one library
function, renders the result; errors are translated here and only here."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from runfmt.errors import ExitCode, SloError

# the same names as capture.signals.SIGNALS (a test pins it); kept here so --help starts fast
SIGNAL_NAMES = ("dns", "retransmit", "connect", "runqueue", "cpu_steal", "tls", "mem_reclaim")


def _fail(exc: SloError) -> None:
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    err.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
    if exc.hint:
        err.print(f"  {exc.hint}", soft_wrap=True)
    sys.exit(ExitCode.USER)


class _Group(click.Group):
    """Turns SloError into one clear message and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SloError as exc:
            _fail(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show libbpf's own log and debug messages.")
@click.version_option(package_name="llm-slo-ebpf-toolkit")
def main(verbose: bool) -> None:
    """Record kernel evidence of LLM SLO misses into a run directory.

    \b
    Start with:   slocap doctor            what this host supports
    Then:         slocap record --out runs --duration 60
    Analyze with: sloan sql "SELECT signal, count(*) FROM kernel_events GROUP BY 1" runs
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    logging.getLogger("capture.libbpf").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--libc", default=None, help="libc to probe for DNS (default: the system's).")
def doctor(as_json: bool, libc: str | None) -> None:
    """Check privilege, BTF, tracefs, libbpf and BCC, and try every probe.

    Each signal's hooks are really loaded and attached, then detached. The mode
    is core_full when every signal works through CO-RE, bcc_degraded when BTF
    is missing but BCC is there, unavailable when nothing can record.
    """
    from capture.doctor import diagnose
    from capture.signals import LIBC

    d = diagnose(libc or LIBC)
    if as_json:
        click.echo(json.dumps(d.to_dict(), indent=2))
    else:
        _render_doctor(d)
    if d.mode == "unavailable":
        sys.exit(ExitCode.USER)


def _render_doctor(d) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console(highlight=False)
    ok = lambda b: "[green]yes[/]" if b else "[red]no[/]"  # noqa: E731
    c.print(f"root            {ok(d.root)}   capabilities: "
            + ", ".join(f"{k} {ok(v)}" for k, v in d.capabilities.items()))
    c.print(f"kernel BTF      {ok(d.btf)}   {d.btf_path}")
    c.print(f"tracefs         {d.tracefs}")
    c.print(f"libbpf          {d.libbpf or '[red]missing[/]'}")
    c.print(f"BCC (degraded)  {ok(d.bcc)}")
    for lib, paths in d.libraries.items():
        c.print(f"{lib:<15} {', '.join(paths) if paths else '[yellow]not found[/]'}")
    t = Table("signal", "available", "hooks", "error")
    for name, s in d.signals.items():
        t.add_row(name, ok(s.available), "\n".join(s.hooks), s.error or "")
    c.print(t)
    c.print(f"mode: [bold]{d.mode}[/]")
    for note in d.notes:
        c.print(f"note: {note}")


def _parse_signals(value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [n for n in names if n not in SIGNAL_NAMES]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown signal {unknown[0]!r}; choose from {', '.join(SIGNAL_NAMES)}" if unknown
            else "name at least one signal")
    return names


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Runs root; the run goes to OUT/tag=TAG/scenario=SCENARIO/run=ID/.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None,
              help="Seconds to record; until Ctrl-C when not given.")
@click.option("--signals", "signals", default=None,
              help=f"Comma-separated subset of {','.join(SIGNAL_NAMES)} (default: config signal_set).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON config merged over config/defaults.json.")
@click.option("--tag", default="adhoc", show_default=True, help="Release tag the run belongs to.")
@click.option("--scenario", default="adhoc", show_default=True, help="Scenario name of the run.")
@click.option("--libc", default=None, help="libc to probe for DNS (default: the system's).")
@click.option("--pods", "pods_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="kubelet /pods JSON (kubectl get --raw /api/v1/nodes/NODE/proxy/pods) to name pods and containers.")
@click.option("--mode", type=click.Choice(["auto", "core", "bcc"]), default="auto", show_default=True,
              help="Probes: CO-RE (needs kernel BTF) or BCC (dns, retransmit; degraded); auto picks CO-RE when BTF exists.")
@click.option("--cgroup", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Record only tasks under this cgroup-v2 directory (dns, connect, tls, mem_reclaim).")
@click.option("--otlp/--no-otlp", default=True, show_default=True,
              help="Receive OpenTelemetry spans (OTLP HTTP and gRPC, config otlp.*) into spans/.")
@click.option("--run-id", default=None, help="Run id (default: UTC time + random suffix).")
@click.option("--seed", type=int, default=None, help="Seed of the workload, kept in the manifest.")
@click.option("--profile", default=None, help="Workload profile name, kept in the manifest.")
@click.option("--phases", default=None, metavar="NAME=S,...",
              help="Planned phases in seconds, kept in the manifest (e.g. baseline=600,fault=600,recovery=300).")
def record(out: Path, duration: float | None, signals: str | None, config_path: Path | None,
           tag: str, scenario: str, libc: str | None, pods_file: Path | None, mode: str,
           cgroup: Path | None, otlp: bool, run_id: str | None, seed: int | None, profile: str | None,
           phases: str | None) -> None:
    """Record kernel events into a new run directory.

    Live counts per signal on a terminal (events/s, drops, bytes written),
    quiet otherwise. Ctrl-C or SIGTERM stops cleanly: part files already
    written stay valid and the manifest says complete: false. SIGUSR1 ends a
    recording without --duration as planned (complete: true): how a harness
    that started it around a workload says "done".

    \b
    Example:
      slocap record --out runs --duration 30 --signals dns,connect
    """
    from capture.preflight import check_host
    from capture.recorder import Recorder, RecordOptions, Stop
    from capture.signals import LIBC
    from runfmt.config import load_config

    cfg = load_config(config_path)
    chosen = _parse_signals(signals) if signals else tuple(
        s for s in cfg["signal_set"]["enabled"] if s in SIGNAL_NAMES)
    check_host(mode)
    stop = Stop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda num, _f: stop.request(signal.Signals(num).name))
    signal.signal(signal.SIGUSR1, lambda _n, _f: stop.finish("finished by the caller (SIGUSR1)"))
    rec = Recorder(RecordOptions(runs_root=out, signals=chosen, config=cfg, duration_s=duration,
                                 tag=tag, scenario=scenario, libc=libc or LIBC, pods_file=pods_file,
                                 otlp=otlp, mode=mode, cgroup=cgroup, run_id=run_id, seed=seed,
                                 profile=profile, phases=_parse_phases(phases)))
    result = _run_with_status(rec, stop)
    _render_result(result)


def _parse_phases(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    try:
        return {name.strip(): float(secs) for name, secs in (p.split("=") for p in text.split(","))}
    except ValueError:
        raise click.BadParameter(f"{text!r}: write NAME=SECONDS,... e.g. baseline=600,fault=600",
                                 param_hint="--phases") from None


def _run_with_status(rec, stop):
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        return rec.run(stop)

    def table(snap) -> Table:
        t = Table(title=f"recording {snap.elapsed_s:5.1f}s → {rec.run_dir}", title_justify="left")
        for col in ("signal", "events/s", "seen", "written", "dropped"):
            t.add_column(col, justify="right" if col != "signal" else "left")
        for name, c in snap.counts.items():
            t.add_row(name, f"{snap.rates[name]:,.0f}", f"{c.seen:,}", f"{c.written:,}",
                      f"[red]{c.dropped:,}[/]" if c.dropped else "0")
        t.caption = f"{snap.bytes_written / 1e6:.2f} MB in {snap.parts} part(s) · Ctrl-C stops"
        return t

    with Live(console=console, refresh_per_second=4, transient=False) as live:
        return rec.run(stop, on_progress=lambda snap: live.update(table(snap)))


def _render_result(result) -> None:
    from rich.console import Console

    from analyze.cli import render_arrow
    from analyze.summary import events_by_signal

    c = Console(highlight=False)
    for name, err in result.attach_errors.items():
        c.print(f"[yellow]warning:[/] {name} was not recorded: {err}")
    if result.otlp_error:
        c.print(f"[yellow]warning:[/] no spans were received: {result.otlp_error}", soft_wrap=True)
    status = "complete" if result.complete else f"[yellow]cut short ({result.stop_reason})[/]"
    c.print(f"run {status}: [bold]{result.run_dir}[/]", soft_wrap=True)
    drops = sum(x.dropped for x in result.counts.values())
    written = sum(x.written for x in result.counts.values())
    c.print(f"{written:,} kernel events written, {drops:,} dropped, "
            f"{result.bytes_written / 1e6:.2f} MB")
    c.print(render_arrow(events_by_signal(result.run_dir), title="first look: events by signal"))
    c.print(f"explore: sloan sql \"SELECT * FROM kernel_events LIMIT 20\" --runs {result.run_dir}", soft_wrap=True)


@main.group()
def lab() -> None:
    """The incident lab: seeded load, really injected faults, labelled runs.

    \b
    slocap lab run --scenario dns_latency --reps 3 --tag main --profile smoke --out runs
    slocap lab run --scenario all --profile full --tag v0.2-rc --out runs
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
def lab_run(scenarios: tuple[str, ...], reps: int, tag: str, profile: str, out: Path, seed: int,
            config_path: Path | None, lab_index: int) -> None:
    """Run scenarios in the lab; one labelled run directory per rep."""
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
                      config=load_config(config_path), seed=seed, lab_index=lab_index)
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


@lab.command("list")
def lab_list() -> None:
    """The scenarios and the fault domain each one labels."""
    from replay.faults import MIXED, SCENARIOS
    from replay.runner import BASELINE

    click.echo(f"{BASELINE:34} no fault")
    for name in SCENARIOS:
        click.echo(name)
    for name, parts in MIXED.items():
        click.echo(f"{name:34} {' + '.join(parts)} at once")


@lab.command("cleanup")
def lab_cleanup() -> None:
    """Remove namespaces, bridges, /etc/netns entries and cgroups a killed lab left."""
    from replay.runner import stop_orphan_recorders
    from replay.topology import cleanup

    removed = stop_orphan_recorders() + cleanup()
    click.echo("\n".join(removed) if removed else "nothing to clean up")
