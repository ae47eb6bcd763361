"""sloan slo and sloan attribute: SLO burn windows, and which fault domain burned them."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import (
    Output, budget_option, command, config_option, emit_lines, emit_result, format_option, json_option,
    load_config, runs_option,
)

SHORT = {"ttft_ms": "ttft", "tpot_ms": "tpot", "request_latency_ms": "e2e", "token_throughput_tps": "tokens/s",
         "error_rate": "errors"}


def _num(v, digits: int = 1):
    """A cell: nothing for None, else the number shown to `digits` decimals."""
    from analyze.formatting import Fixed

    return None if v is None else Fixed(v, digits)


@command()
@runs_option
@config_option
@budget_option
@json_option
@format_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the v1 SLO events (docs/contracts/v1/slo-event) as JSON lines here; - for stdout.")
def slo(runs_paths, config_path, budget, json_out, out_format, output) -> None:
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
    from analyze.formatting import Grid
    from analyze.slo import SLIS, evaluate

    result = evaluate(list(runs_paths), load_config(config_path), budget)
    if output is not None and emit_lines((e for r in result.runs for e in r.events()), output, "v1 SLO events"):
        return
    if emit_result(result.to_dict(), json_out, out_format):
        return
    with Output(out_format) as out:
        for run in result.runs:
            sc = run.scaling.to_dict()
            columns = ["SLI", "measured", "ok", "warning", "breach", "p50", "p95", "unit"]
            t = Grid(f"{run.info.scenario} {run.info.run_id}: {run.workload.service} "
                     f"({run.workload.namespace}), budget {run.budget:.1%}", columns,
                     right=set(columns) - {"SLI", "unit"})
            for sli, s in run.summary().items():
                t.add_row(sli, s["measured"], s["ok"], s["warning"], s["breach"], _num(s["p50"]), _num(s["p95"]),
                          s["unit"])
            out.table(t)
            windows = ", ".join(f"{sc['stands_for'][k]} = {v} s" for k, v in sc["windows_s"].items())
            columns = ["#", "from s", "to s", "requests", "paging (rule)", *[SHORT[s] for s in SLIS]]
            w = Grid(f"{run.info.scenario} {run.info.run_id}: windows of {sc['step_s']} s; burn windows {windows}; "
                     "columns: burn rate over the scaled 1h window", columns, right=set(columns) - {"paging (rule)"})
            for win in run.windows:
                d = win.to_dict(run.start_ns)
                w.add_row(win.index, _num(d["start_s"]), _num(d["end_s"]), win.requests,
                          ", ".join(f"{SHORT[k]} ({v})" for k, v in sorted(win.paging.items())) or "-",
                          *[_num(win.burn[s]["long_fast"]) for s in SLIS])
            out.table(w)
            out.line(f"{len(run.violating)} of {len(run.windows)} windows page.")


@command()
@runs_option
@config_option
@budget_option
@json_option
@format_option
@click.option("--model", "model_spec", default=None, metavar="FILE|prior",
              help="The attribution model: a file from sloan score --save-model, or 'prior' for the "
                   "untrained one. Default: the model shipped with the toolkit (config/model.json).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write v1 incident attributions (docs/contracts/v1/incident-attribution) as JSON lines; "
                   "- for stdout.")
def attribute(runs_paths, config_path, budget, json_out, out_format, model_spec, output) -> None:
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
    from analyze.attribution import Model
    from analyze.attribution import attribute as run_attribution
    from analyze.formatting import Grid

    model = Model.named(model_spec)
    result = run_attribution(list(runs_paths), load_config(config_path), model, budget=budget)
    if output is not None and emit_lines(result.documents(), output, "v1 incident attributions"):
        return
    if emit_result(result.to_dict(), json_out, out_format):
        return
    with Output(out_format) as out:
        out.line(f"model: {result.model.describe()}")
        for ra in result.runs:
            start = ra.evidence.slo.start_ns
            note = "  (seen in training: not an honest test)" if ra.seen_in_training else ""
            t = Grid(f"{ra.info.scenario} {ra.info.run_id}{note}",
                     ["#", "from s", "to s", "paging", "predicted", "conf.", "largest shifts (doublings)"],
                     right={"#", "from s", "to s", "conf."})
            for wa in ra.windows:
                top = sorted(((v, k) for k, v in wa.shifts.items() if v > 0), reverse=True)[:2]
                t.add_row(wa.window.index, _num((wa.window.start_ns - start) / 1e9),
                          _num((wa.window.end_ns - start) / 1e9),
                          ", ".join(SHORT[k] for k in sorted(wa.window.paging)), wa.predicted,
                          _num(wa.confidence, 2), ", ".join(f"{k} +{v:.1f}" for v, k in top if v >= 0.05) or "-")
            out.table(t)
            if not ra.windows:
                out.line("no violating window.")
