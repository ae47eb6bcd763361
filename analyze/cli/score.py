"""sloan score and sloan report: attribution against labels, with CI95."""

from __future__ import annotations

from pathlib import Path

import click

from analyze.cli.options import (
    budget_option, command, config_option, console, emit_json, json_option, load_config, resamples_option,
    runs_option, seed_option,
)
from runfmt.errors import SloError


@command()
@runs_option
@config_option
@budget_option
@json_option
@seed_option
@click.option("--train-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Share of each scenario's runs that trains the model (floor).")
@resamples_option
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score this trained model instead of fitting one (its training runs are left out).")
@click.option("--save-model", "save_model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the fitted model (and its split) here, for sloan attribute --model.")
@click.option("--gate", "gate", is_flag=True,
              help="Exit 1 unless macro precision >= gate.min_precision and recall >= gate.min_recall, "
                   "and the result is not exploratory.")
def score(runs_paths, config_path, budget, json_out, seed, train_fraction, resamples, model_path, save_model,
          gate) -> None:
    """Precision, recall, F1 per fault domain against labels.parquet, with CI95.

    \b
    Runs are split by scenario (seeded) into training and test runs; the model learns
    from training runs only, and only test runs are scored. Fewer than 10 test runs in
    any class make the result exploratory, and an exploratory result never passes --gate.
    Examples:
      sloan score --runs runs/tag=main
      sloan score --runs runs/tag=main --gate --json
    """
    from rich.table import Table

    from analyze.attribution import DOMAINS, Model
    from analyze.scoring import score_runs

    config = load_config(config_path)
    model = Model.load(model_path) if model_path else None
    result = score_runs(list(runs_paths), config, model=model, seed=seed, train_fraction=train_fraction,
                        resamples=resamples, budget=budget)
    if save_model is not None:
        result.fitted_model().save(save_model)
    passed, reasons = result.gate(config)
    if not emit_json({**result.to_dict(), "gate": {"passed": passed, "reasons": reasons}}, json_out):
        c = console()
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


@command()
@runs_option
@config_option
@budget_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The Markdown file to write.")
@seed_option
@click.option("--train-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True)
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score this trained model instead of fitting one.")
def report(runs_paths, config_path, budget, output, seed, train_fraction, model_path) -> None:
    """A Markdown report: runs (mode, per-signal flags), SLO summary, scores with CI95.

    \b
    Example:
      sloan report --runs runs/tag=main -o report.md
    """
    from analyze.attribution import Model
    from analyze.report import report as build

    model = Model.load(model_path) if model_path else None
    text = build(list(runs_paths), load_config(config_path), model=model, seed=seed, train_fraction=train_fraction,
                 budget=budget)
    try:
        output.write_text(text)
    except OSError as exc:
        raise SloError(f"cannot write {output}: {exc.strerror}", "pass a writable path") from None
    click.echo(f"wrote {output}")
