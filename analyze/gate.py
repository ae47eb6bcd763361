"""The CI regression gate: `sloan gate --base TAG --candidate TAG` over Parquet runs.

Checks, each pass / fail / cannot_judge, with thresholds from the config:
  * TTFT p95 regression: fails when the candidate's median TTFT p95 over runs is
    worse than the base's by more than gate.max_p95_regression_pct percent, AND the
    CI95 of the difference lies above 0, AND Cliff's delta is not negligible
    (analyze.stats.is_regression). All three: a shift inside the noise never fails.
  * attribution precision >= gate.min_precision and recall >= gate.min_recall: the
    candidate's values from analyze.scoring (pooled over its test runs' windows);
    cannot judge when scoring is unavailable, has nothing to score, or calls its own
    result exploratory (unless allow_exploratory).
  * recorder overhead (the candidate's median over runs of the mean overhead_pct)
    <= safety.max_overhead_pct.
  * class balance: both tags ran the same scenarios (else their medians mix
    different faults and cannot be compared).

Verdict and exit code: any fail -> regression (1); else any cannot_judge -> cannot
judge (2); else pass (0). An exploratory comparison (fewer than 10 runs per tag and
profile) never passes or fails a release: its checks are reported and the verdict is
cannot judge (2), unless allow_exploratory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from analyze import stats
from analyze.compare import METRIC, Comparison, compare_tags
from analyze.formatting import diff_cells, fmt, fmt_ci, fmt_delta, fmt_diff, fmt_p, value_cell

PASS, FAIL, CANNOT_JUDGE = "pass", "fail", "cannot_judge"
VERDICT_EXIT = {"pass": 0, "regression": 1, "cannot_judge": 2}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | fail | cannot_judge
    measured: str
    threshold: str
    detail: str = ""


@dataclass
class GateResult:
    base: str
    candidate: str
    comparison: Comparison
    checks: list[Check]
    allow_exploratory: bool
    verdict: str  # pass | regression | cannot_judge
    reason: str

    @property
    def exit_code(self) -> int:
        return VERDICT_EXIT[self.verdict]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "reason": self.reason,
                "base": self.base, "candidate": self.candidate,
                "exploratory": self.comparison.exploratory, "allow_exploratory": self.allow_exploratory,
                "checks": [asdict(c) for c in self.checks], "comparison": self.comparison.to_dict()}

    def to_markdown(self) -> str:
        return gate_markdown(self)


def _ttft_check(cmp: Comparison, candidate: str, max_pct: float) -> Check:
    name, threshold = "TTFT p95 regression", (f"fails above +{max_pct:g} % with CI95 > 0 "
                                              "and a non-negligible Cliff's delta")
    mc = cmp.metric("ttft_p95_ms")
    d = mc.diffs.get(candidate) if mc else None
    if d is None or d.n_base < 2 or d.n_candidate < 2:
        n = "no" if d is None else f"{d.n_base} base / {d.n_candidate} candidate"
        return Check(name, CANNOT_JUDGE, f"{n} run(s) with requests", threshold,
                     "needs at least 2 runs with requests per tag")
    measured = (f"{fmt_diff(d, 'ms')}, CI95 {fmt_ci(d, 'ms')}, "
                f"Cliff's delta {fmt_delta(d)}, p {fmt_p(d.p_value)}")
    status = FAIL if stats.is_regression(d, max_pct) else PASS
    return Check(name, status, measured, threshold)


def _floor_check(cmp: Comparison, candidate: str, key: str, floor: float, name: str,
                 allow_exploratory: bool) -> Check:
    threshold = f">= {floor:g}"
    mc = cmp.metric(key)
    if mc is None:
        return Check(name, CANNOT_JUDGE, "n/a", threshold, f"attribution metrics {cmp.attribution}")
    value = mc.values.get(candidate)
    if value is None:
        return Check(name, CANNOT_JUDGE, "n/a", threshold,
                     f"no {METRIC[key].label} for {candidate} (no labelled run, or no window to score)")
    measured = value_cell(mc, candidate, cmp.runs_of(candidate).runs)
    reasons = cmp.scoring_exploratory.get(candidate)
    if reasons and not allow_exploratory:
        return Check(name, CANNOT_JUDGE, measured, threshold,
                     "scoring is exploratory (" + "; ".join(reasons) + "): it never passes the gate")
    return Check(name, PASS if value >= floor else FAIL, measured, threshold)


def _overhead_check(cmp: Comparison, candidate: str, limit: float) -> Check:
    """The candidate's median over runs of the manifest's direct accounting (recorder CPU +
    BPF run time, capture/accounting.py: each run's median window); runs without it cannot
    be judged."""
    name, threshold = "recorder overhead", f"<= {limit:g} % (safety.max_overhead_pct)"
    value = cmp.metric("overhead_pct").values.get(candidate)
    if value is None:
        return Check(name, CANNOT_JUDGE, "n/a", threshold, f"no resources/ in the runs of {candidate}")
    methods = cmp.runs_of(candidate).overhead_methods
    counted = ("direct", "calibrated")  # capture/accounting.py: BPF run time is in both
    estimated = sum(n for m, n in methods.items() if m not in counted)
    if estimated:
        how = ", ".join(f"{m} {n}" for m, n in methods.items() if m not in counted)
        return Check(name, CANNOT_JUDGE, fmt(value, "%") + " (estimate)", threshold,
                     f"{estimated} run(s) of {candidate} have no direct accounting with BPF run time ({how}): "
                     "record them with safety.bpf_run_time on (the default) or \"calibrate\"")
    return Check(name, PASS if value <= limit else FAIL, fmt(value, "%"), threshold)


def _balance_check(cmp: Comparison) -> Check:
    each = "; ".join(f"{t.tag}: " + ", ".join(f"{s} {n}" for s, n in t.scenarios.items()) for t in cmp.tag_runs)
    status = PASS if cmp.balanced else CANNOT_JUDGE
    return Check("class balance", status, each, "same scenarios in both tags",
                 "" if cmp.balanced else "the tags ran different scenarios; pass --scenario to pick common ones")


def evaluate(cmp: Comparison, config: dict, *, candidate: str, allow_exploratory: bool = False) -> GateResult:
    """The gate's checks and verdict on a comparison of base (its reference) and candidate."""
    g = config["gate"]
    checks = [
        _ttft_check(cmp, candidate, g["max_p95_regression_pct"]),
        _floor_check(cmp, candidate, "precision", g["min_precision"], "attribution precision", allow_exploratory),
        _floor_check(cmp, candidate, "recall", g["min_recall"], "attribution recall", allow_exploratory),
        _overhead_check(cmp, candidate, config["safety"]["max_overhead_pct"]),
        _balance_check(cmp),
    ]
    failed = [c.name for c in checks if c.status == FAIL]
    unknown = [c.name for c in checks if c.status == CANNOT_JUDGE]
    if cmp.exploratory and not allow_exploratory:
        runs = ", ".join(f"{t.tag} {t.runs}" for t in cmp.tag_runs)
        verdict = "cannot_judge"
        reason = (f"exploratory: fewer than {cmp.min_runs} runs per tag and profile ({runs}); "
                  "an exploratory comparison never passes or fails a release "
                  "(--allow-exploratory judges it anyway)")
    elif failed:
        verdict, reason = "regression", "failed: " + ", ".join(failed)
    elif unknown:
        verdict, reason = "cannot_judge", "cannot judge: " + ", ".join(unknown)
    else:
        verdict, reason = "pass", "every check passed"
    return GateResult(cmp.reference, candidate, cmp, checks, allow_exploratory, verdict, reason)


def run_gate(paths, *, base: str, candidate: str, config: dict | None = None,
             profile: str | None = None, scenarios: tuple[str, ...] = (), allow_exploratory: bool = False,
             seed: int = stats.SEED, resamples: int = stats.RESAMPLES, skip_bad: bool = False) -> GateResult:
    """Compare candidate against base over the runs below `paths` and judge it."""
    from runfmt.config import load_config

    if config is None:
        config = load_config()
    cmp = compare_tags([Path(p) for p in paths], [base, candidate], profile=profile, scenarios=scenarios,
                       config=config, seed=seed, resamples=resamples, skip_bad=skip_bad)
    return evaluate(cmp, config, candidate=candidate, allow_exploratory=allow_exploratory)


# --- Markdown ---------------------------------------------------------------------------

_VERDICT = {"pass": "PASS", "regression": "REGRESSION", "cannot_judge": "CANNOT JUDGE"}


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def comparison_markdown(cmp: Comparison) -> str:
    """The metric table, the run counts and the notes of a comparison, in Markdown."""
    lines = []
    head = ["metric"] + cmp.tags
    for t in cmp.tags[1:]:
        head += [f"{t} − {cmp.reference}", "CI95", "p (MWU)", "Cliff's δ"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mc in cmp.metrics:
        row = [mc.metric.label] + [value_cell(mc, t, cmp.runs_of(t).runs) for t in cmp.tags]
        for t in cmp.tags[1:]:
            row += diff_cells(mc, t)
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    lines += ["", "| tag | profile | runs | runs per scenario |", "|---|---|---|---|"]
    for t in cmp.tag_runs:
        lines.append(f"| {t.tag} | {t.profile} | {t.runs} | "
                     + ", ".join(f"{s} {n}" for s, n in t.scenarios.items()) + " |")
    lines += ["", f"Values: median over runs. CI95: bootstrap over runs ({cmp.resamples:,} resamples, "
                  f"seed {cmp.seed}, within scenario). p: Mann-Whitney U, two-sided. "
                  f"Attribution: {cmp.attribution}."]
    lines += [f"- {n}" for n in cmp.notes]
    return "\n".join(lines)


def gate_markdown(result: GateResult) -> str:
    cmp = result.comparison
    lines = [f"## Release gate: {result.candidate} against {result.base} — {_VERDICT[result.verdict]}", "",
             f"{result.reason}. Exit code {result.exit_code}.", "",
             f"Profile {cmp.profile}; runs " + ", ".join(f"{t.tag} {t.runs}" for t in cmp.tag_runs)
             + f"; {'EXPLORATORY (fewer than ' + str(cmp.min_runs) + ' runs per tag)' if cmp.exploratory else 'not exploratory'}.",
             "", "| check | result | measured | threshold | note |", "|---|---|---|---|---|"]
    for c in result.checks:
        lines.append("| " + " | ".join(_md_cell(x) for x in (c.name, c.status, c.measured, c.threshold, c.detail))
                     + " |")
    lines += ["", "### Metrics", "", comparison_markdown(cmp), ""]
    return "\n".join(lines)
