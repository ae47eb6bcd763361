"""sloan slo / attribute / score / report: parse options, call one library function
(analyze.slo, analyze.attribution, analyze.scoring, analyze.report), render the result.
Errors are SloError subclasses; analyze.cli's group turns them into exit code 1.

Register in analyze/cli.py:
    from analyze.cli_score import attribute, report, score, slo
    for command in (slo, attribute, score, report):
        main.add_command(command)
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from runfmt.errors import SloError

_RUNS = click.argument("runs_paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN...")
_CONFIG = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                       help="JSON config merged over config/defaults.json (slo thresholds, gate).")
_BUDGET = click.option("--budget", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                       help="Error budget per SLI, a fraction (default: config slo.error_rate.warning, 0.02).")
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON document).")


def _config(path: Path | None) -> dict:
    from runfmt.config import load_config

    return load_config(path)


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _emit_lines(docs, output: Path, what: str) -> bool:
    """JSON lines to a file (saying so on stderr), or to stdout for '-'; True when they
    went to stdout, which then holds nothing else."""
    if str(output) == "-":
        for doc in docs:
            click.echo(json.dumps(doc))
        return True
    n = 0
    try:
        with open(output, "w") as fh:
            for doc in docs:
                fh.write(json.dumps(doc) + "\n")
                n += 1
    except OSError as exc:
        raise SloError(f"cannot write {output}: {exc.strerror}", "pass a writable path, or - for stdout") from None
    click.echo(f"wrote {n:,} {what} to {output}", err=True)
    return False


SHORT = {"ttft_ms": "ttft", "request_latency_ms": "latency", "token_throughput_tps": "tokens/s",
         "error_rate": "errors"}


def _num(v, digits: int = 1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


@click.command()
@_RUNS
@_CONFIG
@_BUDGET
@_JSON
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the v1 SLO events (docs/contracts/v1/slo-event) as JSON lines here; - for stdout.")
def slo(runs_paths, config_path, budget, as_json, output) -> None:
    """Per-request SLIs, their status, and the windows whose error budget burns too fast.

    \b
    SLIs: ttft_ms, request_latency_ms (e2e), token_throughput_tps (lower is worse),
    error_rate. Page rule (SRE workbook): 1h+5m windows both burn >= 14.4, or 6h+30m
    both >= 6, with every window scaled by run length / 6h (6h -> the run).
    Examples:
      sloan slo runs/tag=main
      sloan slo runs/tag=main -o events.jsonl
    """
    from rich.table import Table

    from analyze.slo import SLIS, evaluate

    result = evaluate(list(runs_paths), _config(config_path), budget)
    if output is not None and _emit_lines((e for r in result.runs for e in r.events()), output, "v1 SLO events"):
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    c = _console()
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


@click.command()
@_RUNS
@_CONFIG
@_BUDGET
@_JSON
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A trained model (sloan score --save-model); default: the untrained prior model.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write v1 incident attributions (docs/contracts/v1/incident-attribution) as JSON lines; "
                   "- for stdout.")
def attribute(runs_paths, config_path, budget, as_json, model_path, output) -> None:
    """Which fault domain burned the SLO in each violating window, with the evidence.

    \b
    Evidence of the gateway per window against the run's baseline phase: DNS, connect,
    retransmits, TLS, run-queue delay, reclaim stalls (eBPF), 429/5xx and retrieval time
    (spans), retries (requests). Domains under 0.5 posterior are not blamed; with none
    blamed the window is `unknown`.
    Examples:
      sloan attribute runs/tag=main/scenario=dns_latency
      sloan attribute runs/tag=main --model model.json -o incidents.jsonl
    """
    from rich.table import Table

    from analyze.attribution import Model
    from analyze.attribution import attribute as run_attribution

    model = Model.load(model_path) if model_path else None
    result = run_attribution(list(runs_paths), _config(config_path), model, budget=budget)
    if output is not None and _emit_lines(result.documents(), output, "v1 incident attributions"):
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    c = _console()
    source = result.model.trained.get("source", "prior")
    for ra in result.runs:
        start = ra.evidence.slo.start_ns
        note = "  (seen in training: not an honest test)" if ra.seen_in_training else ""
        t = Table(title=f"{ra.info.scenario} {ra.info.run_id} (model: {source}){note}", title_justify="left")
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


@click.command()
@_RUNS
@_CONFIG
@_BUDGET
@_JSON
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split and the bootstrap.")
@click.option("--train-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Share of each scenario's runs that trains the model (floor).")
@click.option("--resamples", type=click.IntRange(100, 100_000), default=1000, show_default=True,
              help="Bootstrap resamples for the CI95.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score this trained model instead of fitting one (its training runs are left out).")
@click.option("--save-model", "save_model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the fitted model (and its split) here, for sloan attribute --model.")
@click.option("--gate", "gate", is_flag=True,
              help="Exit 1 unless macro precision >= gate.min_precision and recall >= gate.min_recall, "
                   "and the result is not exploratory.")
def score(runs_paths, config_path, budget, as_json, seed, train_fraction, resamples, model_path, save_model,
          gate) -> None:
    """Precision, recall, F1 per fault domain against labels.parquet, with CI95.

    \b
    Runs are split by scenario (seeded) into training and test runs; the model learns
    from training runs only, and only test runs are scored. Fewer than 10 test runs in
    any class make the result exploratory, and an exploratory result never passes --gate.
    Examples:
      sloan score runs/tag=main
      sloan score runs/tag=main --gate --json
    """
    from rich.table import Table

    from analyze.attribution import DOMAINS, Model
    from analyze.scoring import score_runs

    config = _config(config_path)
    model = Model.load(model_path) if model_path else None
    result = score_runs(list(runs_paths), config, model=model, seed=seed, train_fraction=train_fraction,
                        resamples=resamples, budget=budget)
    if save_model is not None:
        Model.from_dict(result.model).save(save_model)
    passed, reasons = result.gate(config)
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "gate": {"passed": passed, "reasons": reasons}}, indent=2))
    else:
        c = _console()
        flag = "[bold yellow]EXPLORATORY[/]" if result.exploratory else "not exploratory"
        c.print(f"{result.n_runs} test run(s), {len(result.train_runs)} training run(s), "
                f"{result.windows} violating window(s); {flag}")
        t = Table(title="attribution (violating windows of test runs; CI95 bootstrap over runs)",
                  title_justify="left")
        for name in ("domain", "precision", "recall", "F1", "TP", "FP", "FN"):
            t.add_column(name, justify="left" if name == "domain" else "right")
        for d in DOMAINS:
            m = result.per_domain[d]
            t.add_row(d, str(m["precision"]), str(m["recall"]), str(m["f1"]), str(m["tp"]), str(m["fp"]),
                      str(m["fn"]))
        t.add_row("macro", str(result.precision), str(result.recall), str(result.f1), "", "", "",
                  end_section=True)
        c.print(t)
        c.print(f"abstain rate {result.abstain_rate} (fault windows {result.abstain_rate_fault}, "
                f"no-fault windows {result.abstain_rate_none}); detection delay s {result.detection_delay_s}, "
                f"{result.detected} of {result.faulted} faults detected", soft_wrap=True)
        c.print("class balance (test runs): " + ", ".join(f"{k} {v}" for k, v in result.class_balance.items())
                + (f"; not evaluated: {', '.join(result.not_evaluated)}" if result.not_evaluated else ""),
                soft_wrap=True)
        cols = sorted({p for row in result.confusion.values() for p in row})
        m = Table(title="confusion (rows truth, columns top prediction)", title_justify="left")
        m.add_column("truth")
        for col in cols:
            m.add_column(col, justify="right")
        for truth, row in result.confusion.items():
            m.add_row(truth, *[str(row.get(col, 0)) for col in cols])
        c.print(m)
        if result.correlation:
            k = Table(title="correlation on lab-known pairs", title_justify="left")
            for name in ("check", "runs", "truth pairs", "paired", "right span", "precision", "recall",
                         "wrong-span tiers"):
                k.add_column(name, justify="left" if name in ("check", "wrong-span tiers") else "right")
            for name, cc in result.correlation.items():
                k.add_row(f"{name} ({cc['expected_tier']})", str(cc["runs"]), f"{cc['truth_pairs']:,}",
                          f"{cc['matched']:,}", f"{cc['right_span']:,}", _metric_text(cc["precision"]),
                          _metric_text(cc["recall"]),
                          ", ".join(f"{t} {n}" for t, n in cc["wrong_span_tiers"].items()) or "-")
            c.print(k)
        c.print(f"split (seed {seed}): train {', '.join(result.train_runs) or 'none'}", soft_wrap=True)
        for note in result.notes:
            c.print(f"note: {note}", soft_wrap=True)
    if gate and not passed:
        raise SloError("attribution gate failed: " + "; ".join(reasons),
                       "record more labelled runs (sloan needs >= 10 per class) or improve the attribution")


def _metric_text(d: dict) -> str:
    if d["value"] is None:
        return "n/a"
    ci = d.get("ci95")
    return f"{d['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{d['value']:.3f} (no CI)"


@click.command()
@_RUNS
@_CONFIG
@_BUDGET
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The Markdown file to write.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split and the bootstrap.")
@click.option("--train-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True)
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score this trained model instead of fitting one.")
def report(runs_paths, config_path, budget, output, seed, train_fraction, model_path) -> None:
    """A Markdown report: runs (mode, per-signal flags), SLO summary, scores with CI95.

    \b
    Example:
      sloan report runs/tag=main -o report.md
    """
    from analyze.attribution import Model
    from analyze.report import report as build

    model = Model.load(model_path) if model_path else None
    text = build(list(runs_paths), _config(config_path), model=model, seed=seed, train_fraction=train_fraction,
                 budget=budget)
    try:
        output.write_text(text)
    except OSError as exc:
        raise SloError(f"cannot write {output}: {exc.strerror}", "pass a writable path") from None
    click.echo(f"wrote {output}")
