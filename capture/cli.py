"""slocap: the recorder's command line. Parses options, calls one library
function, renders the result; errors are translated here and only here."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path

import click

from runfmt.console import ErrorGroup
from runfmt.errors import ExitCode
from runfmt.signals import SIGNAL_NAMES


@click.group(cls=ErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show libbpf's own log and debug messages.")
@click.version_option(package_name="llm-slo-ebpf-toolkit")
def main(verbose: bool) -> None:
    """Record kernel evidence of LLM SLO misses into a run directory.

    \b
    Start with:   slocap doctor            what this host supports
    Then:         slocap record --out runs --duration 60
    Analyze with: sloan sql "SELECT signal, count(*) FROM kernel_events GROUP BY 1" --runs runs
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
    if d.mode == "core_full":
        c.print("slocap record records every signal above by default (config signal_set.enabled), "
                "with its overhead counted exactly (manifest overhead)")
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
@click.option("--otlp-optional", is_flag=True,
              help="If the OTLP ports are taken, record without spans (said in the manifest) "
                   "instead of failing at start.")
@click.option("--run-id", default=None, help="Run id (default: UTC time + random suffix).")
@click.option("--seed", type=int, default=None, help="Seed of the workload, kept in the manifest.")
@click.option("--profile", default=None, help="Workload profile name, kept in the manifest.")
@click.option("--phases", default=None, metavar="NAME=S,...",
              help="Planned phases in seconds, kept in the manifest (e.g. baseline=600,fault=600,recovery=300).")
def record(out: Path, duration: float | None, signals: str | None, config_path: Path | None,
           tag: str, scenario: str, libc: str | None, pods_file: Path | None, mode: str,
           cgroup: Path | None, otlp: bool, otlp_optional: bool, run_id: str | None, seed: int | None, profile: str | None,
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
    _limit_malloc_arenas()
    os.umask(0o077)  # run files hold addresses, DNS names and span attributes: the owner's only
    chosen = _parse_signals(signals) if signals else tuple(
        s for s in cfg["signal_set"]["enabled"] if s in SIGNAL_NAMES)
    check_host(mode)
    stop = Stop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda num, _f: stop.request(signal.Signals(num).name))
    signal.signal(signal.SIGUSR1, lambda _n, _f: stop.finish("finished by the caller (SIGUSR1)"))
    rec = Recorder(RecordOptions(runs_root=out, signals=chosen, config=cfg, duration_s=duration,
                                 tag=tag, scenario=scenario, libc=libc or LIBC, pods_file=pods_file,
                                 otlp=otlp, otlp_optional=otlp_optional, mode=mode, cgroup=cgroup,
                                 run_id=run_id, seed=seed, profile=profile, phases=_parse_phases(phases)))
    for endpoint in rec.otlp_exposed:
        click.echo(f"warning: OTLP endpoint {endpoint} listens beyond this host: anyone who reaches it can "
                   "add spans to the run (recorded in the manifest); bind 127.0.0.1 unless spans come "
                   "from other hosts", err=True)
    result = _run_with_status(rec, stop)
    _render_result(result, rec.shedding())
    if rec.flatten_error:
        click.echo(f"warning: the spans were not flattened ({rec.flatten_error}); the run keeps them as raw OTLP "
                   f"requests: slocap repair {result.run_dir}", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def repair(run_dir: Path) -> None:
    """Rebuild a cut run's manifest from the parts on disk.

    A recorder killed with SIGKILL, or a machine that stopped, leaves a manifest
    that still says "recording". Every part file on disk is whole, so repair
    counts them: rows per table, events per signal, and the file list. The run
    stays marked cut (complete: false) and every sloan command says so.

    The OTLP requests such a run kept as they came (otlp_raw) are flattened into
    spans first, as the recorder does when a recording ends; so are those of a
    finished run whose flattening failed (its manifest says spans_state "raw").

    \b
    Example:
      slocap repair runs/tag=adhoc/scenario=adhoc/run=20261204T101500Z-ab12
    """
    from capture.repair import repair_run

    r = repair_run(run_dir)
    click.echo(f"repaired {run_dir}: " + ", ".join(f"{t} {n:,} rows" for t, n in r.rows.items()))
    if r.events:
        click.echo("kernel events by signal: " + ", ".join(f"{s} {n:,}" for s, n in sorted(r.events.items())))
    if r.flattened is not None:
        f = r.flattened
        click.echo(f"spans flattened from {f.requests:,} raw OTLP request(s) in {len(f.parts)} part(s): "
                   f"{f.spans:,} spans, {f.cpu_s:.2f} s CPU")
    for problem in r.damaged:
        click.echo(f"warning: part left out, unreadable: {problem}", err=True)
    if r.removed_tmp:
        click.echo(f"removed {len(r.removed_tmp)} half-written temporary part(s)")


def _limit_malloc_arenas() -> None:
    """glibc keeps freed memory per thread arena; every OTLP connection is a thread, so a
    burst of large bodies would leave RSS high. Two arenas keep the peak near one body's."""
    import ctypes

    M_ARENA_MAX = -8  # glibc's malloc.h
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


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


MAX_SHED_LINES = 6  # shedding steps shown; the manifest's safety.actions lists them all


def shed_lines(shedding: dict) -> list[str]:
    """What was shed and when, from Recorder.shedding(): one line per step (the first few),
    then the signals switched off and the spans refused."""
    actions = shedding.get("actions") or []
    lines = [f"{a['t_s']:.1f} s ({a['cause']} cost {a[a['cause'] + '_overhead_pct']:.2f} % of "
             f"{a['overhead_pct']:.2f} %): {a['detail']}" for a in actions[:MAX_SHED_LINES]]
    more = len(actions) - MAX_SHED_LINES + (shedding.get("actions_not_listed") or 0)
    if more > 0:
        lines.append(f"... {more} more step(s) in the manifest's safety.actions")
    for name, off in (shedding.get("switched_off") or {}).items():
        if off["how"] == "detached":
            lines.append(f"{name}: off from {off['t_s']:.1f} s, detached at {off['detached_t_s']:.1f} s: "
                         f"its events in the last {off['uncounted_s']:.1f} s are not counted")
        else:
            lines.append(f"{name}: off from {off['t_s']:.1f} s, its events counted as sampled out")
    refused, requests = shedding.get("spans_refused") or 0, shedding.get("requests_refused") or 0
    if requests:
        json_only = shedding.get("refused_requests_uncounted") or 0
        lines.append(f"span intake: {refused:,} spans in {requests:,} export request(s) refused with backpressure"
                     + (f" ({json_only:,} OTLP/JSON request(s) among them, their spans not counted)"
                        if json_only else ""))
    return lines


def _render_result(result, shedding: dict | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape

    from runfmt.console import render_arrow
    from runfmt.queries import events_by_signal

    c = Console(highlight=False)
    for name, err in result.attach_errors.items():
        c.print(f"[yellow]warning:[/] {name} was not recorded: {err}")
    if result.otlp_error:
        c.print(f"[yellow]warning:[/] no spans were received: {result.otlp_error}", soft_wrap=True)
    degraded = bool(shedding and shedding.get("degraded"))
    if not result.complete:
        status = f"[yellow]cut short ({result.stop_reason}){', degraded' if degraded else ''}[/]"
    else:
        status = "[yellow]degraded[/]" if degraded else "complete"
    c.print(f"run {status}: [bold]{result.run_dir}[/]", soft_wrap=True)
    for line in shed_lines(shedding) if degraded else ():
        c.print(f"  shed: {escape(line)}", soft_wrap=True)
    drops = sum(x.dropped for x in result.counts.values())
    sampled_out = sum(x.sampled_out for x in result.counts.values())
    written = sum(x.written for x in result.counts.values())
    c.print(f"{written:,} kernel events written, {drops:,} dropped, {sampled_out:,} sampled out, "
            f"{result.bytes_written / 1e6:.2f} MB")
    c.print(render_arrow(events_by_signal(result.run_dir), title="first look: events by signal"))
    c.print(f"explore: sloan sql \"SELECT * FROM kernel_events LIMIT 20\" --runs {result.run_dir}", soft_wrap=True)


# Commands other packages add to slocap (the lab's `slocap lab`, replay/cli.py),
# declared as entry points of the group "slocap.commands" in pyproject.toml: the
# recorder does not import them.
for _entry in entry_points(group="slocap.commands"):
    main.add_command(_entry.load(), _entry.name)
