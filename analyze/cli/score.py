"""sloan score and sloan report: attribution against labels, with CI95."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import (
    Output, budget_option, command, config_option, emit_result, format_option, json_option, load_config,
    resamples_option, runs_option, seed_option,
)
from runfmt.errors import SloError


@command()
@runs_option
@config_option
@budget_option
@json_option
@format_option
@seed_option
@click.option("--train-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Share of each scenario's runs that trains the model (floor).")
@click.option("--split", "split_by", type=click.Choice(["scenario", "intensity"]), default="scenario",
              show_default=True,
              help="scenario: a seeded share of each scenario's runs trains; intensity: leave one fault "
                   "setting out (each scenario-and-parameters group is tested by a model that never saw it).")
@resamples_option
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score this trained model instead of fitting one (its training runs are left out).")
@click.option("--save-model", "save_model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the fitted model (and its split) here, for sloan attribute --model.")
@click.option("--gate", "gate", is_flag=True,
              help="Exit 1 unless macro precision >= gate.min_precision and recall >= gate.min_recall, "
                   "and the result is not exploratory.")
def score(runs_paths, config_path, budget, json_out, out_format, seed, train_fraction, split_by, resamples,
          model_path, save_model, gate) -> None:
    """Precision, recall, F1 per fault domain against labels.parquet, with CI95.

    \b
    Runs are split by scenario (seeded) into training and test runs; the model learns
    from training runs only, and only test runs are scored. Fewer than 10 test runs in
    any class make the result exploratory, and an exploratory result never passes --gate.
    Examples:
      sloan score --runs runs/tag=main
      sloan score --runs runs/tag=main --gate --json
      sloan score --runs runs/tag=main --format markdown
      sloan score --runs runs/sweep --split intensity     # does it hold at settings it never saw?
    """
    from analyze.attribution import Model
    from analyze.scoring import score_runs

    if split_by == "intensity" and (model_path or save_model):
        raise click.UsageError("--split intensity fits one model per fault setting left out: "
                               "it neither takes --model nor writes --save-model")
    config = load_config(config_path)
    model = Model.load(model_path) if model_path else None
    result = score_runs(list(runs_paths), config, model=model, seed=seed, train_fraction=train_fraction,
                        resamples=resamples, budget=budget, split_by=split_by)
    if save_model is not None:
        result.fitted_model().save(save_model)
    passed, reasons = result.gate(config)
    if not emit_result({**result.to_dict(), "gate": {"passed": passed, "reasons": reasons}}, json_out, out_format):
        with Output(out_format) as out:
            _show_score(out, result, seed)
    if gate and not passed:
        raise SloError("attribution gate failed: " + "; ".join(reasons),
                       "record more labelled runs (sloan needs >= 10 per class) or improve the attribution")


def _show_score(out, result, seed: int) -> None:
    from analyze.attribution import DOMAINS
    from analyze.formatting import Grid

    flag = "[bold yellow]EXPLORATORY[/]" if result.exploratory else "not exploratory"
    out.line(f"{result.n_runs} test run(s), {len(result.train_runs)} training run(s), "
             f"{result.windows} violating window(s); {flag}", markup=True)
    t = Grid("attribution (violating windows of test runs; CI95 bootstrap over runs)",
             ["domain", "precision", "recall", "F1", "TP", "FP", "FN"],
             right={"precision", "recall", "F1", "TP", "FP", "FN"})
    for d in DOMAINS:
        m = result.per_domain[d]
        t.add_row(d, str(m["precision"]), str(m["recall"]), str(m["f1"]), m["tp"], m["fp"], m["fn"])
    t.add_row("macro", str(result.precision), str(result.recall), str(result.f1), None, None, None)
    t.sections.add(len(t.rows) - 2)  # a rule above the macro row
    out.table(t)
    out.line(f"abstain rate {result.abstain_rate} (fault windows {result.abstain_rate_fault}, "
             f"no-fault windows {result.abstain_rate_none}); detection delay s {result.detection_delay_s}, "
             f"{result.detected} of {result.faulted} faults detected")
    out.line(f"abstain on every no-fault window, paging or not: {result.abstain_rate_quiet} "
             "(would the model blame a domain where no fault was injected)")
    out.line("class balance (test runs): " + ", ".join(f"{k} {v}" for k, v in result.class_balance.items())
             + (f"; not evaluated: {', '.join(result.not_evaluated)}" if result.not_evaluated else ""))
    cols = sorted({p for row in result.confusion.values() for p in row})
    m = Grid("confusion (rows truth, columns top prediction)", ["truth", *cols], right=set(cols))
    for truth, row in result.confusion.items():
        m.add_row(truth, *[row.get(col, 0) for col in cols])
    out.table(m)
    if result.correlation:
        k = Grid("correlation on lab-known pairs",
                 ["check", "runs", "truth pairs", "paired", "right span", "precision", "recall", "wrong-span tiers"],
                 right={"runs", "truth pairs", "paired", "right span", "precision", "recall"})
        for name, cc in result.correlation.items():
            k.add_row(f"{name} ({cc['expected_tier']})", cc["runs"], cc["truth_pairs"], cc["matched"],
                      cc["right_span"], _metric_text(cc["precision"]), _metric_text(cc["recall"]),
                      ", ".join(f"{t} {n}" for t, n in cc["wrong_span_tiers"].items()) or "-")
        out.table(k)
    if result.baseline:
        b = result.baseline
        out.line(f"baseline ({b['model']}): precision {b['precision']}, recall {b['recall']}, F1 {b['f1']}; "
                 f"abstain on no-fault windows {b['abstain_rate_none']}, on every no-fault window "
                 f"{b['abstain_rate_quiet']}")
    if result.by_intensity:
        g = Grid("recall per fault setting (test runs)",
                 ["setting", "runs", "paged fault windows", "unpaged fault windows", "hits", "misses", "recall"],
                 right={"runs", "paged fault windows", "unpaged fault windows", "hits", "misses", "recall"})
        for row in result.by_intensity:
            g.add_row(row["intensity"], row["runs"], row["paged_fault_windows"], row["unpaged_fault_windows"],
                      row["hits"], row["misses"], "n/a" if row["recall"] is None else f"{row['recall']:.3f}")
        out.table(g)
    if result.mixed.get("runs"):
        mx = result.mixed
        shown = "n/a" if mx["recall"] is None else f"{mx['recall']:.3f}"
        out.line(f"mixed runs ({mx['runs']}): recall {shown} over each cause ({mx['hits']} found, "
                 f"{mx['misses']} missed)")
    if result.split.get("method", "").startswith("leave one intensity out"):
        out.line(f"split: {result.split['method']}")
    else:
        out.line(f"split (seed {seed}): train {', '.join(result.train_runs) or 'none'}")
    for note in result.notes:
        out.line(f"note: {note}")


def _metric_text(d: dict) -> str:
    if d["value"] is None:
        return "n/a"
    ci = d.get("ci95")
    return f"{d['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{d['value']:.3f} (no CI)"


@command()
@runs_option
@config_option
@budget_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The Markdown file to write (scores against labels.parquet, CI95).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also (or only) write one self-contained HTML page per run set: SLIs, kernel evidence and "
                   "attribution per window on one time axis; prints what paged and why.")
@seed_option
@click.option("--train-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True)
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Markdown: score this trained model instead of fitting one. HTML: attribute with it "
                   "('prior': the untrained one; default: the shipped config/model.json).")
def report(runs_paths, config_path, budget, output, html_path, seed, train_fraction, model_path) -> None:
    """A Markdown report (-o: runs, SLO summary, scores with CI95) and/or an HTML report (--html).

    \b
    The HTML page opens offline (plotly.js is inlined). Per run: TTFT, TPOT and error rate per
    burn window, the kernel evidence per signal (DNS, connect, retransmits, TLS, run queue,
    reclaim), the posterior per fault domain with the shifts behind it (hover), the labelled
    fault and the paging windows shaded, correlation tiers and capability flags.
    Examples:
      sloan report --runs runs/tag=main -o report.md
      sloan report --runs runs/tag=demo --html report.html
    """
    from analyze.attribution import Model

    if output is None and html_path is None:
        raise click.UsageError("nothing to write: pass -o FILE (Markdown), --html FILE, or both")
    config = load_config(config_path)
    if output is not None:
        from analyze.report import report as build

        model = Model.load(model_path) if model_path else None
        text = build(list(runs_paths), config, model=model, seed=seed, train_fraction=train_fraction,
                     budget=budget)
        try:
            output.write_text(text)
        except OSError as exc:
            raise SloError(f"cannot write {output}: {exc.strerror}", "pass a writable path") from None
        click.echo(f"wrote {output}")
    if html_path is not None:
        from analyze.html_report import build as build_html

        page = build_html(list(runs_paths), config, Model.named(model_path), budget=budget)
        try:
            html_path.write_text(page.html)
        except OSError as exc:
            raise SloError(f"cannot write {html_path}: {exc.strerror}", "pass a writable path") from None
        _show_paging(page)
        click.echo(f"wrote {html_path} ({len(page.html.encode()) / 1e6:.1f} MB, {len(page.runs)} run(s); "
                   f"model: {page.model.describe()})")


def _show_paging(page) -> None:
    """Per run, the windows that paged and what the attribution says caused them."""
    for view in page.runs:
        info = view.info
        seen = ", seen in training" if view.attribution.seen_in_training else ""
        head = f"{info.scenario} {info.run_id} (fault: {view.label_text()}{seen})"
        incidents = view.incidents()
        if not incidents:
            click.echo(f"{head}: no window paged")
            continue
        click.echo(f"{head}: {len(view.paging)} of {len(view.attribution.windows)} windows paged")
        for i in incidents:
            windows = f"w{i.first:02d}" + (f"-w{i.last:02d}" if i.last != i.first else "")
            click.echo(f"  {windows} {i.start_s:.1f}-{i.end_s:.1f} s {','.join(i.paging)} -> {i.predicted} "
                       f"{i.confidence:.2f}: {i.because}")
