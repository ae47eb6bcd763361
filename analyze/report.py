"""The Markdown report of `sloan report --runs RUNS -o report.md`: the runs (mode and per-signal
flags of each), the SLO summary, the attribution and correlation scores with CI95, the class
balance, the split and the exploratory flag. Pure text building; no terminal output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from analyze.attribution import DOMAINS
from analyze.scoring import ScoreResult
from analyze.slo import SLIS, UNITS, RunSlo
from analyze.stats import bootstrap_median_ci
from runfmt.signals import SIGNAL_NAMES


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def _metric(m) -> str:
    """A Metric (or its to_dict form) as 'value [lo, hi]'."""
    value, ci = (m.value, m.ci95) if hasattr(m, "ci95") else (m["value"], m.get("ci95"))
    if value is None:
        return "n/a"
    if not ci:
        return f"{value:.3f} (no CI: no scenario has 2 test runs)"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def median_ci(values: Sequence[float | None], resamples: int = 1000, seed: int = 42) -> str:
    """Median over runs with a seeded percentile-bootstrap CI95 over runs (none below 2 runs)."""
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    median, lo, hi = bootstrap_median_ci(v, resamples=resamples, seed=seed)
    if lo is None:
        return f"{median:,.0f} (no CI: 1 run)"
    return f"{median:,.0f} [{lo:,.0f}, {hi:,.0f}]"


def slo_section(slos: Sequence[RunSlo]) -> list[str]:
    lines = ["## SLO summary", ""]
    if not slos:
        return lines + ["No run has requests.", ""]
    s0 = slos[0]
    sc = s0.scaling.to_dict()
    lines += [f"Error budget {s0.budget:.2%} of requests per SLI (a request is bad when its status is "
              f"breach). Multi-window rule: {sc['rule']}; windows scaled by run length / 6 h "
              f"(run {sc['run_s']} s: 6h→{sc['windows_s']['long_slow']} s, 30m→{sc['windows_s']['short_slow']} s, "
              f"1h→{sc['windows_s']['long_fast']} s, 5m→{sc['windows_s']['short_fast']} s; evaluated every "
              f"{sc['step_s']} s).", ""]
    thresholds = s0.thresholds
    def rule(t) -> str:
        return "≤" if t.lower_is_worse else "≥"

    lines += ["Thresholds: " + "; ".join(
        f"{sli} warning {rule(t)} {t.warning:g}, breach {rule(t)} {t.breach:g} {UNITS[sli]}"
        for sli, t in thresholds.items()), ""]
    by_scenario: dict[str, list[RunSlo]] = {}
    for s in slos:
        by_scenario.setdefault(s.info.scenario, []).append(s)
    header = ["scenario", "runs", "requests", "TTFT p95 ms, median of runs [CI95]",
              "E2E p95 ms, median of runs [CI95]"] + [f"{sli} breach share" for sli in SLIS] + \
             ["windows paging / all"]
    rows = []
    for scenario in sorted(by_scenario):
        group = by_scenario[scenario]
        n_req = sum(int(g.requests["request_id"].size) for g in group)
        shares = []
        for sli in SLIS:
            measured = sum(g.summary()[sli]["measured"] for g in group)
            breach = sum(g.summary()[sli]["breach"] for g in group)
            shares.append(f"{breach / measured:.1%}" if measured else "–")
        paging = sum(len(g.violating) for g in group)
        windows = sum(len(g.windows) for g in group)
        latency = [median_ci([g.summary()[sli]["p95"] for g in group]) for sli in ("ttft_ms", "request_latency_ms")]
        rows.append([scenario, len(group), n_req, *latency, *shares, f"{paging} / {windows}"])
    lines += _table(header, rows) + [""]
    paging_by_sli = {sli: sum(1 for s in slos for w in s.violating if sli in w.paging) for sli in SLIS}
    lines += ["Paging windows per SLI (all runs): " + ", ".join(f"{k} {v}" for k, v in paging_by_sli.items()), ""]
    for sli, share in baseline_paging(slos).items():
        if share > 0.5:
            lines += [f"**Note:** {sli} pages in {share:.0%} of the windows inside the runs' baseline phase, "
                      "before any fault: its thresholds sit inside the service's normal behaviour, so it pages "
                      "whatever happens and every such window goes to the attribution.", ""]
    return lines


def baseline_paging(slos: Sequence[RunSlo]) -> dict[str, float]:
    """Per SLI, the share of windows lying inside a run's baseline phase in which it pages."""
    inside = [w for s in slos if s.info.phases.get("baseline")
              for w in s.windows if w.end_ns <= s.start_ns + s.info.phases["baseline"] * 1e9]
    if not inside:
        return {}
    return {sli: sum(sli in w.paging for w in inside) / len(inside) for sli in SLIS}


def runs_section(score: ScoreResult) -> list[str]:
    header = ["run", "tag", "scenario", "profile", "mode", "complete", "role", "truth",
              *SIGNAL_NAMES, "violating / windows"]
    rows = []
    for r in score.runs:
        flags = ["✓" if r["signals"].get(s) else "✗" for s in SIGNAL_NAMES]
        rows.append([r["run_id"], r["tag"], r["scenario"], r["profile"], r["mode"], r["complete"], r["role"],
                     "+".join(r["classes"]), *flags, f"{r['violating']} / {r['windows']}"])
    return ["## Runs", "", f"{len(score.runs)} labelled run(s): {score.n_runs} test, {len(score.train_runs)} "
            "train. Signal flags: ✓ attached, ✗ not attached (manifest).", "", *_table(header, rows), ""]


def score_section(score: ScoreResult, config: Mapping) -> list[str]:
    passed, reasons = score.gate(config)
    g = config["gate"]
    lines = ["## Attribution scores", ""]
    flag = "**EXPLORATORY**" if score.exploratory else "not exploratory"
    lines += [f"Result: {flag}" + (f" ({'; '.join(score.exploratory_reasons)})" if score.exploratory else ""),
              "",
              f"Gate (precision ≥ {g['min_precision']}, recall ≥ {g['min_recall']}, never when exploratory): "
              + ("**pass**" if passed else "**fail** — " + "; ".join(reasons)), "",
              f"Scored on {score.n_runs} test run(s), {score.windows} SLO-violating window(s); CI95 by a "
              f"percentile bootstrap over runs (within scenario, {score.resamples} resamples, seed {score.seed}).",
              ""]
    lines += _table(["metric", "value [CI95]"], [
        ["macro precision", _metric(score.precision)], ["macro recall", _metric(score.recall)],
        ["macro F1", _metric(score.f1)], ["abstain rate (all windows)", _metric(score.abstain_rate)],
        ["abstain rate (fault windows)", _metric(score.abstain_rate_fault)],
        ["abstain rate (no-fault windows)", _metric(score.abstain_rate_none)],
        ["abstain rate (every no-fault window, paging or not)", _metric(score.abstain_rate_quiet)],
        ["detection delay, s (median)", _metric(score.detection_delay_s)],
        ["faults detected", f"{score.detected} of {score.faulted} faulted test runs"],
        ["fault windows that did not page", score.unpaged_fault_windows]]) + [""]
    rows = []
    for d in DOMAINS:
        m = score.per_domain[d]
        rows.append([d, _metric(m["precision"]), _metric(m["recall"]), _metric(m["f1"]),
                     m["tp"], m["fp"], m["fn"]])
    lines += ["### Per domain", "", *_table(["domain", "precision", "recall", "F1", "TP", "FP", "FN"], rows), ""]
    if score.not_evaluated:
        lines += [f"Not evaluated (no test run holds them): {', '.join(score.not_evaluated)}.", ""]
    lines += ["### Class balance", "", *_table(["class", "test runs", "violating windows"],
              [[c, n, score.windows_per_class.get(c, 0)] for c, n in score.class_balance.items()]), ""]
    cols = sorted({p for row in score.confusion.values() for p in row})
    lines += ["### Confusion matrix (top prediction)", "", "Rows: truth; columns: predicted.", "",
              *_table(["truth \\ predicted", *cols],
                      [[t, *[row.get(c, 0) for c in cols]] for t, row in score.confusion.items()]), ""]
    split = score.split
    lines += ["### Split", "", f"Method: {split.get('method')}; seed {split.get('seed', '–')}, train fraction "
              f"{split.get('train_fraction', '–')}.", "",
              f"Train ({len(score.train_runs)}): {', '.join(score.train_runs) or 'none'}", "",
              f"Test ({len(score.test_runs)}): {', '.join(score.test_runs) or 'none'}", ""]
    model = score.model
    lines += ["### Model", "", *_table(["domain", "intercept", "weight per doubling", "signals"],
              [[d, model["intercepts"][d], model["weights"][d], ", ".join(model["signatures"][d])]
               for d in DOMAINS]), ""]
    return lines


def correlation_section(score: ScoreResult) -> list[str]:
    lines = ["## Correlation scores", "",
             "Truth pairs from how the lab injects each fault (sql/attr_truth_*.sql); precision = events paired "
             "with their true span / events paired; recall = paired with their true span at the expected tier / "
             "truth pairs.", ""]
    if not score.correlation:
        return lines + ["No run with a network_dns or network_egress label.", ""]
    rows = [[name, c["runs"], c["expected_tier"], c["truth_pairs"], c["matched"], c["right_span"],
             _metric(c["precision"]), _metric(c["recall"]),
             ", ".join(f"{k} {v}" for k, v in c["wrong_span_tiers"].items()) or "–"]
            for name, c in score.correlation.items()]
    return lines + _table(["check", "runs", "expected tier", "truth pairs", "paired", "right span",
                           "precision [CI95]", "recall [CI95]", "wrong-span pairs by tier"], rows) + [""]


def build_report(score: ScoreResult, slos: Sequence[RunSlo], config: Mapping) -> str:
    tags = sorted({r["tag"] for r in score.runs})
    lines = ["# SLO attribution report", "",
             f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} from {len(score.runs)} run(s) "
             f"(tags: {', '.join(tags) or '–'}).", "",
             "**Exploratory**: fewer than 10 runs in some class; these figures gate nothing." if score.exploratory
             else "Not exploratory: every class has at least 10 test runs.", ""]
    lines += runs_section(score) + slo_section(slos) + score_section(score, config) + correlation_section(score)
    if score.notes:
        lines += ["## Notes", "", *[f"* {n}" for n in score.notes], ""]
    return "\n".join(lines)


def report(paths, config: Mapping, **score_options) -> str:
    """Scores the labelled runs below `paths` and renders the report."""
    from pathlib import Path

    from analyze.scoring import score_runs
    from analyze.slo import evaluate_run

    score = score_runs(paths, config, **score_options)
    slos = [evaluate_run(Path(r["run_dir"]), config, score_options.get("budget")) for r in score.runs]
    return build_report(score, slos, config)
