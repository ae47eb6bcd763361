"""sloan export: the analysis sent to where the rest of the telemetry lives (OTLP today)."""

from __future__ import annotations

import sys

import click

from analyze.cli.options import (
    _isatty, budget_option, command, config_option, emit_json, json_option, load_config, runs_option,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def export() -> None:
    """Send the analysis of runs to a system that is already running (OTLP today)."""


@command("otlp")
@runs_option
@click.option("--endpoint", required=True, metavar="URL", envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
              help="The OTLP receiver (Collector, Tempo): a base URL, http:// in plain text, https:// with TLS, "
                   "or HOST:PORT (TLS unless --insecure). Default: $OTEL_EXPORTER_OTLP_ENDPOINT.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True,
              help="OTLP over HTTP/protobuf (port 4318, /v1/traces and /v1/logs are added) or gRPC (port 4317).")
@click.option("--headers", "headers", multiple=True, metavar="KEY=VALUE",
              help="A header sent with every request, e.g. authorization='Bearer T' (repeatable).")
@click.option("--insecure", is_flag=True, help="No TLS for a HOST:PORT endpoint (an http:// URL never uses TLS).")
@click.option("--signal", "signals", type=click.Choice(["traces", "logs"]), multiple=True,
              default=("traces", "logs"), show_default=True,
              help="What to send (repeatable): traces, the spans with their kernel evidence; logs, the v1 SLO "
                   "events and incident attributions. A traces-only receiver (Tempo) needs --signal traces.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=512, show_default=True,
              help="Spans or log records per export request.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, 600, min_open=True), default=10.0,
              show_default=True, help="Seconds one export request may take, retries included.")
@click.option("--model", "model_spec", default=None, metavar="FILE|prior",
              help="The attribution model, as sloan attribute takes it (default: the shipped one).")
@config_option
@budget_option
@json_option
def otlp(runs_paths, endpoint, protocol, headers, insecure, signals, batch_size, timeout_s, model_spec,
         config_path, budget, json_out) -> None:
    """Send runs over OTLP: spans with their kernel evidence, SLO events and attributions as logs.

    \b
    Traces: every span with its recorded ids, parent, times, status, attributes and
    resource, plus slo.kernel.* (the kernel events correlated to it: count, sum_ms, max_ms
    per signal, retransmits) and slo.correlation.tier. Logs: one record per v1 SLO event
    (event name llm.slo.event) and incident attribution (llm.incident.attribution), the
    JSON document as the body. Stops at the first batch the receiver does not take.
    Examples:
      sloan export otlp --runs runs/tag=main --endpoint http://localhost:4318
      sloan export otlp --runs runs --endpoint tempo:4317 --protocol grpc --insecure --signal traces
      sloan export otlp --runs runs --endpoint https://otlp.example.com --headers authorization='Bearer T'
    """
    from analyze.attribution import Model
    from analyze.otlp_export import Target, export_otlp
    from runfmt.errors import ConfigError

    try:
        target = Target.parse(endpoint, protocol, headers, insecure, timeout_s)
    except ConfigError as exc:
        raise click.UsageError(exc.message + (f"\n{exc.hint}" if exc.hint else "")) from None
    model = Model.named(model_spec) if "logs" in signals else None
    config = load_config(config_path)
    kwargs = {"budget": budget, "signals": signals, "batch_size": batch_size}
    if _isatty(sys.stdout):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("", total=None)

            def progress(run: str, what: str, done: int, total: int) -> None:
                bar.update(task, description=f"{run}: {what}", completed=done, total=total or None)

            summary = export_otlp(runs_paths, target, config, model, progress=progress, **kwargs)
    else:
        summary = export_otlp(runs_paths, target, config, model, **kwargs)
    if emit_json(summary.to_dict(), json_out):
        return
    for run in summary.runs:
        logs = (f", {run.log_records:,} log records ({run.slo_events:,} SLO events, "
                f"{run.attributions:,} incident attributions)") if "logs" in summary.signals else ""
        spans = (f"{run.spans:,} spans ({run.spans_with_evidence:,} with kernel evidence)"
                 if "traces" in summary.signals else "")
        click.echo(f"{run.scenario} {run.run_id}: " + (spans + logs).removeprefix(", "))
        for note in run.notes:
            click.echo(f"  note: {note}")
    where = ", ".join(dict.fromkeys(target.url(s) for s in summary.signals))
    click.echo(f"sent {summary.spans:,} spans and {summary.log_records:,} log records of {len(summary.runs)} "
               f"run(s) to {where} ({target.protocol})")



export.add_command(otlp)
