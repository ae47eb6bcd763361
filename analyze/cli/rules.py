"""sloan rules: the SLOs of the config as rules for a monitoring system (Prometheus today)."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import budget_option, command, config_option, load_config, write_text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def rules() -> None:
    """Alerting and recording rules for the SLOs of the config, to run in production."""


@command("prometheus")
@config_option
@budget_option
@click.option("--metrics", type=click.Choice(["vllm", "otel-genai"]), default="vllm", show_default=True,
              help="Which metrics the rules read: vLLM's (vllm:time_to_first_token_seconds, ...) or the "
                   "OpenTelemetry GenAI server metrics (gen_ai_server_time_to_first_token_seconds, ...).")
@click.option("--ttft-metric", metavar="NAME", default=None,
              help="The TTFT histogram, without _bucket (default: the --metrics set's).")
@click.option("--tpot-metric", metavar="NAME", default=None,
              help="The per-request TPOT histogram, without _bucket (default: the --metrics set's).")
@click.option("--e2e-metric", metavar="NAME", default=None,
              help="The E2E latency histogram, without _bucket (default: the --metrics set's).")
@click.option("--requests-metric", metavar="NAME", default=None,
              help="The counter of finished requests, failed ones included (default: the --metrics set's).")
@click.option("--failed", "failed_matcher", metavar="MATCHERS", default=None,
              help='Label matchers picking the failed requests of --requests-metric (vllm: '
                   'finished_reason=~"error|abort"; otel-genai: error_type!="").')
@click.option("--selector", default="", metavar="MATCHERS",
              help='Label matchers added to every series read, e.g. job="vllm",model_name="llama".')
@click.option("--by", "by_labels", default="", metavar="LABELS",
              help="Comma-separated labels each SLO is kept apart by (e.g. model_name); alerts carry them.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the rules file here instead of to stdout.")
def prometheus(config_path, budget, metrics, ttft_metric, tpot_metric, e2e_metric, requests_metric,
               failed_matcher, selector, by_labels, output) -> None:
    """Prometheus recording and alerting rules (YAML) for the SLOs of the config.

    \b
    Multi-window, multi-burn-rate alerts (SRE workbook) for every SLI whose
    slo.<sli>.page is true (TTFT, TPOT, errors by default): page at 14.4x the
    budget over 1h and 5m, and at 6x over 6h and 30m; ticket at 1x over 3d and 6h.
    The other SLIs get their recording rules only. A latency SLI's breach must be a
    bucket boundary of its histogram; otherwise the nearest is used, with a warning.
    Check the file with `promtool check rules FILE`.
    Examples:
      sloan rules prometheus -o slo-rules.yml
      sloan rules prometheus --metrics otel-genai --selector 'job="gateway"'
      sloan rules prometheus --config my-slo.json --by model_name
    """
    from analyze.prometheus import prometheus_rules

    names = {"ttft_ms": ttft_metric, "tpot_ms": tpot_metric, "request_latency_ms": e2e_metric,
             "requests": requests_metric, "failed": failed_matcher}
    result = prometheus_rules(load_config(config_path), metrics, budget=budget, names=names, selector=selector,
                              by=by_labels.split(","), source=str(config_path or "config/defaults.json"))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    text = result.to_yaml()
    if output is None:
        click.echo(text, nl=False)
        return
    write_text(output, text)
    click.echo(f"wrote {result.records} recording rules and {len(result.alerts)} alerts to {output}", err=True)


rules.add_command(prometheus)
