"""sloan slo and sloan attribute: SLO burn windows, and which fault domain burned them."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import (
    budget_option, command, config_option, console, emit_json, emit_lines, json_option, load_config,
    runs_option,
)

SHORT = {"ttft_ms": "ttft", "tpot_ms": "tpot", "request_latency_ms": "e2e", "token_throughput_tps": "tokens/s",
         "error_rate": "errors"}


def _num(v, digits: int = 1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


@command()
@runs_option
@config_option
@budget_option
@json_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the v1 SLO events (docs/contracts/v1/slo-event) as JSON lines here; - for stdout.")
def slo(runs_paths, config_path, budget, json_out, output) -> None:
    """Per-request SLIs, their status, and the windows whose error budget burns too fast.

    \b
    SLIs: ttft_ms, tpot_ms and error_rate page; request_latency_ms (e2e) and
    token_throughput_tps (lower is worse) are reported and page only when the config's
    slo.<sli>.page says so. Page rule (SRE workbook): 1h+5m windows both burn >= 14.4, or 6h+30m
    both >= 6, with every window scaled by run length / 6h (6h -> the run).
    Examples:
      sloan slo --runs runs/tag=main
      sloan slo --runs runs/tag=main -o events.jsonl
    """
    from rich.table import Table

    from analyze.slo import SLIS, evaluate

    result = evaluate(list(runs_paths), load_config(config_path), budget)
    if output is not None and emit_lines((e for r in result.runs for e in r.events()), output, "v1 SLO events"):
        return
    if emit_json(result.to_dict(), json_out):
        return
    c = console()
    for run in result.runs:
        sc = run.scaling.to_dict()
        t = Table(title=f"{run.info.scenario} {run.info.run_id}: {run.workload.service} "
                        f"({run.workload.namespace}), budget {run.budget:.1%}", title_justify="left")
        for name in ("SLI", "measured", "ok", "warning", "breach", "p50", "p95", "unit"):
            t.add_column(name, justify="left" if name in ("SLI", "unit") else "right")
        for sli, s in run.summary().items():
            t.add_row(sli, f"{s['measured']:,}", f"{s['ok']:,}", f"{s['warning']:,}", f"{s['breach']:,}",
                      _num(s["p50"]), _num(s["p95"]), s["unit"])
        c.print(t)
        windows = ", ".join(f"{sc['stands_for'][k]} = {v} s" for k, v in sc["windows_s"].items())
        w = Table(title=f"windows of {sc['step_s']} s; burn windows {windows}; columns: burn rate over "
                        "the scaled 1h window", title_justify="left")
        for name in ("#", "from s", "to s", "requests", "paging (rule)", *[SHORT[s] for s in SLIS]):
            w.add_column(name, justify="left" if name.startswith("paging") else "right")
        for win in run.windows:
            d = win.to_dict(run.start_ns)
            w.add_row(str(win.index), f"{d['start_s']:.1f}", f"{d['end_s']:.1f}", f"{win.requests:,}",
                      ", ".join(f"{SHORT[k]} ({v})" for k, v in sorted(win.paging.items())) or "-",
                      *[_num(win.burn[s]["long_fast"]) for s in SLIS])
        c.print(w)
        c.print(f"{len(run.violating)} of {len(run.windows)} windows page.\n")


@command()
@runs_option
@config_option
@budget_option
@json_option
@click.option("--model", "model_spec", default=None, metavar="FILE|prior",
              help="The attribution model: a file from sloan score --save-model, or 'prior' for the "
                   "untrained one. Default: the model shipped with the toolkit (config/model.json).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write v1 incident attributions (docs/contracts/v1/incident-attribution) as JSON lines; "
                   "- for stdout.")
def attribute(runs_paths, config_path, budget, json_out, model_spec, output) -> None:
    """Which fault domain burned the SLO in each violating window, with the evidence.

    \b
    Evidence of the gateway per window against the run's baseline phase: DNS, connect,
    retransmits, TLS, run-queue delay, reclaim stalls (eBPF), 429/5xx and retrieval time
    (spans), retries (requests). Domains under 0.5 posterior are not blamed; with none
    blamed the window is `unknown`.
    Examples:
      sloan attribute --runs runs/tag=main/scenario=dns_latency
      sloan attribute --runs runs/tag=main --model model.json -o incidents.jsonl
      sloan attribute --runs runs/tag=main --model prior       # the untrained model
    """
    from rich.table import Table

    from analyze.attribution import Model
    from analyze.attribution import attribute as run_attribution

    model = Model.named(model_spec)
    result = run_attribution(list(runs_paths), load_config(config_path), model, budget=budget)
    if output is not None and emit_lines(result.documents(), output, "v1 incident attributions"):
        return
    if emit_json(result.to_dict(), json_out):
        return
    c = console()
    c.print(f"model: {result.model.describe()}", soft_wrap=True, markup=False)
    for ra in result.runs:
        start = ra.evidence.slo.start_ns
        note = "  (seen in training: not an honest test)" if ra.seen_in_training else ""
        t = Table(title=f"{ra.info.scenario} {ra.info.run_id}{note}", title_justify="left")
        for name in ("#", "from s", "to s", "paging", "predicted", "conf.", "largest shifts (doublings)"):
            t.add_column(name, justify="right" if name in ("#", "from s", "to s", "conf.") else "left")
        for wa in ra.windows:
            top = sorted(((v, k) for k, v in wa.shifts.items() if v > 0), reverse=True)[:2]
            t.add_row(str(wa.window.index), f"{(wa.window.start_ns - start) / 1e9:.1f}",
                      f"{(wa.window.end_ns - start) / 1e9:.1f}",
                      ", ".join(SHORT[k] for k in sorted(wa.window.paging)), wa.predicted, f"{wa.confidence:.2f}",
                      ", ".join(f"{k} +{v:.1f}" for v, k in top if v >= 0.05) or "-")
        c.print(t)
        if not ra.windows:
            c.print("no violating window.")
