"""Scoring: how good the attribution (and the correlation) is against the lab's labels.

`score_runs(paths, config)` takes labelled run directories (labels.parquet: fault domain,
start_ns, end_ns; a baseline run has the file with no rows; a run without the file is left
out), splits them into a training and a test set, fits the attribution model on the training
runs only, attributes the test runs and compares.

Split: by run, stratified by scenario, seeded (default 42): inside each scenario the runs,
sorted by id, are shuffled and the first floor(n * train_fraction) train the model (default
0.5: of 3 runs 1 trains, 2 test; a lone run always tests). With `model` given (a model file)
nothing is fitted: every run it was not trained on is a test run. The split is in the result.

Unit: an SLO-violating window of a test run (analyze.slo). Its truth is the set of labelled
domains whose fault window overlaps it (empty: `none`); the prediction is the set of
*blamed* domains (posterior >= 0.5) and the top domain or `unknown` (abstain).
  * per domain, one-vs-rest over windows: TP = blamed and true, FP = blamed and not true,
    FN = true and not blamed; precision, recall, F1 (None when the denominator is 0).
  * macro averages over the domains in play (true in some window or blamed in some), an
    undefined value counting 0 (scikit-learn's zero_division=0); macro F1 is the mean of the
    per-domain F1.
  * confusion matrix of the top prediction: rows = the truth (domains joined by '+', or
    none), columns = predicted domain or unknown.
  * abstain rate: windows predicted unknown / windows; also on fault and on none windows.
    These count paging windows, the ones `sloan attribute` explains. abstain_rate_quiet
    counts every window without a fault, paging or not: would the model blame a domain
    where nothing was injected. In the lab the only no-fault windows that page are those
    right after a fault cleared, whose requests were in flight during it.
  * detection delay, per faulted test run: fault start -> end of the first violating window
    that overlaps the fault and blames a true domain; median over detected runs.
  * fault windows that did not page are counted (`unpaged_fault_windows`): the SLO never
    asked the attribution about them.
CI95: percentile bootstrap over test runs (resampled with replacement inside each scenario,
so a resample keeps the class balance), seeded, 1000 resamples. None when no scenario has two
test runs (nothing would vary); a scenario with one test run adds no variation, so with few
runs per scenario the interval is narrower than the truth.

Classes are the true domains of the test runs plus `none` (baseline runs). With fewer than 10
test runs of any class the result is `exploratory`; an exploratory result never passes the
gate. Domains no test run holds (e.g. provider_error: no lab scenario injects 5xx) are
listed as not evaluated.

Correlation precision/recall, on pairs whose truth follows from how the lab injects faults
(sql/attr_truth_dns.sql, sql/attr_truth_egress.sql), over every labelled run (correlation
learns nothing, so it needs no split):
  * dns: in a network_dns run, every gateway resolve span that started in the fault window
    against its getaddrinfo event (same thread and name, overlapping in time); expected tier
    trace_id.
  * egress: in a network_egress run, every gateway retransmit in the fault window on the
    tuple of a generation call's connection against that call's span; expected tier pod_conn.
  precision = events paired with their true span / events paired with any span (>= 0.7);
  recall = events paired with their true span at the expected tier / truth pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix
from sklearn.preprocessing import MultiLabelBinarizer

from analyze.attribution import (
    ABSTAIN_BELOW, DOMAINS, FEATURE_NAMES, UNKNOWN, Model, RunEvidence, attribute_evidence, collect_run, fit,
)
from analyze.slo import RunInfo
from analyze.stats import can_bootstrap, percentile_ci, resample_indices
from runfmt.errors import DataError

NONE = "none"
SEED = 42
TRAIN_FRACTION = 0.5
RESAMPLES = 1000
MIN_RUNS_PER_CLASS = 10
CORRELATION_CHECKS = {  # name -> (labelled domain, query, expected tier)
    "dns": ("network_dns", "attr_truth_dns", "trace_id"),
    "egress": ("network_egress", "attr_truth_egress", "pod_conn"),
}


# --- per window, per run -------------------------------------------------------------


@dataclass(frozen=True)
class ScoredWindow:
    index: int
    start_ns: int
    end_ns: int
    truth: frozenset[str]  # empty: no fault
    predicted: str  # a domain or unknown
    blamed: frozenset[str]


@dataclass
class RunScore:
    run_id: str
    scenario: str
    labels: list[dict]  # domain, start_ns, end_ns
    windows: list[ScoredWindow]  # violating windows
    unpaged_fault_windows: int = 0
    quiet_windows: int = 0  # every window without a fault, paging or not
    quiet_abstained: int = 0  # of those, the ones the model would answer unknown on

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(label["domain"] for label in self.labels) or frozenset({NONE})

    @property
    def fault_start_ns(self) -> int | None:
        return min((label["start_ns"] for label in self.labels), default=None)

    @property
    def delay_s(self) -> float | None:
        """Fault start -> end of the first window blaming a true domain; None if never."""
        start = self.fault_start_ns
        if start is None:
            return None
        for w in sorted(self.windows, key=lambda w: w.end_ns):
            if w.truth & w.blamed:
                return max(0.0, (w.end_ns - start) / 1e9)
        return None


def window_truth(labels: Sequence[Mapping[str, Any]], start_ns: int, end_ns: int) -> frozenset[str]:
    """Domains whose fault window (start_ns, end_ns) overlaps the window [start, end) by more
    than a point."""
    return frozenset(lb["domain"] for lb in labels if lb["start_ns"] < end_ns and lb["end_ns"] > start_ns)


def truth_key(truth: frozenset[str]) -> str:
    return "+".join(sorted(truth)) or NONE


# counts per run, in one vector so a bootstrap resample is a sum of rows
_D = len(DOMAINS)
TP, FP, FN = 0, _D, 2 * _D
ABST = 3 * _D  # windows, abstained, fault windows, abstained on fault, none windows, abstained on none,
# then every no-fault window (paging or not) and the ones abstained on
N_COUNTS = ABST + 8


def indicators(sets: Sequence[frozenset[str]]) -> np.ndarray:
    """Domain sets as a (windows, domains) 0/1 matrix, columns in DOMAINS order."""
    return MultiLabelBinarizer(classes=list(DOMAINS)).fit_transform(sets)


def run_counts(run: RunScore) -> np.ndarray:
    """TP/FP/FN per domain (scikit-learn's multilabel confusion) and the abstain counts."""
    c = np.zeros(N_COUNTS, np.int64)
    if run.windows:
        mcm = multilabel_confusion_matrix(indicators([w.truth for w in run.windows]),
                                          indicators([w.blamed for w in run.windows]))
        c[TP:TP + _D], c[FP:FP + _D], c[FN:FN + _D] = mcm[:, 1, 1], mcm[:, 0, 1], mcm[:, 1, 0]
    for w in run.windows:
        abstained = w.predicted == UNKNOWN
        c[ABST] += 1
        c[ABST + 1] += abstained
        c[ABST + 2 if w.truth else ABST + 4] += 1
        c[ABST + 3 if w.truth else ABST + 5] += abstained
    c[ABST + 6], c[ABST + 7] = run.quiet_windows, run.quiet_abstained
    return c


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def prf(tp: float, fp: float, fn: float) -> tuple[float | None, float | None, float | None]:
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f = None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)
    if f is None and (tp + fp or tp + fn):
        f = 0.0  # one of them undefined: no true positive is possible either way
    return p, r, f


def metrics_from_counts(c: np.ndarray) -> dict[str, Any]:
    """Per-domain and macro precision/recall/F1 and abstain rates from summed counts."""
    per, in_play = {}, []
    for i, d in enumerate(DOMAINS):
        tp, fp, fn = int(c[TP + i]), int(c[FP + i]), int(c[FN + i])
        p, r, f = prf(tp, fp, fn)
        per[d] = {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn}
        if tp + fp + fn:
            in_play.append(d)

    def macro(key):
        return float(np.mean([per[d][key] or 0.0 for d in in_play])) if in_play else None

    return {"per_domain": per, "in_play": in_play,
            "precision": macro("precision"), "recall": macro("recall"), "f1": macro("f1"),
            "abstain_rate": _ratio(c[ABST + 1], c[ABST]),
            "abstain_rate_fault": _ratio(c[ABST + 3], c[ABST + 2]),
            "abstain_rate_none": _ratio(c[ABST + 5], c[ABST + 4]),
            "abstain_rate_quiet": _ratio(c[ABST + 7], c[ABST + 6]),
            "windows": int(c[ABST]), "fault_windows": int(c[ABST + 2]), "none_windows": int(c[ABST + 4])}


def confusion(runs: Sequence[RunScore]) -> dict[str, dict[str, int]]:
    """Truth (domains joined by '+', or none) -> top prediction -> windows, non-zero cells only."""
    truth = [truth_key(w.truth) for r in runs for w in r.windows]
    predicted = [w.predicted for r in runs for w in r.windows]
    if not truth:
        return {}
    labels = sorted(set(truth) | set(predicted))
    cm = confusion_matrix(truth, predicted, labels=labels)
    return {t: {p: int(cm[i, j]) for j, p in enumerate(labels) if cm[i, j]}
            for i, t in enumerate(labels) if t in truth}


# --- bootstrap -------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    value: float | None
    ci95: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return {"value": None if self.value is None else round(self.value, 4),
                "ci95": None if self.ci95 is None else [round(self.ci95[0], 4), round(self.ci95[1], 4)]}

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        ci = f" [{self.ci95[0]:.3f}, {self.ci95[1]:.3f}]" if self.ci95 else " (no CI)"
        return f"{self.value:.3f}{ci}"




def _median(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


# --- correlation truth ---------------------------------------------------------------


@dataclass
class CorrelationCounts:
    truth: int = 0  # truth pairs
    no_event: int = 0  # truth spans without a recorded kernel event (dns only)
    matched: int = 0  # truth events correlation paired with some span (>= 0.7)
    right_span: int = 0  # ... with their true span
    right_span_expected_tier: int = 0
    tiers: dict[str, int] = field(default_factory=dict)  # tier of the right-span pairs
    wrong_tiers: dict[str, int] = field(default_factory=dict)  # tier of wrong-span pairs

    def add(self, other: CorrelationCounts) -> None:
        for name in ("truth", "no_event", "matched", "right_span", "right_span_expected_tier"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.tiers, other.tiers), (self.wrong_tiers, other.wrong_tiers)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    @property
    def precision(self) -> float | None:
        return _ratio(self.right_span, self.matched)

    @property
    def recall(self) -> float | None:
        return _ratio(self.right_span_expected_tier, self.truth)


def correlation_counts(rows: Sequence[Mapping[str, Any]], expected_tier: str) -> CorrelationCounts:
    """Counts of a truth query's rows (sql/attr_truth_*.sql)."""
    c = CorrelationCounts()
    for r in rows:
        c.truth += 1
        if r.get("event_no") is None:
            c.no_event += 1
            continue
        if r.get("tier") is None:
            continue
        c.matched += 1
        right = r["matched_trace_id"] == r["trace_id"] and r["matched_span_id"] == r["span_id"]
        bucket = c.tiers if right else c.wrong_tiers
        bucket[r["tier"]] = bucket.get(r["tier"], 0) + 1
        if right:
            c.right_span += 1
            c.right_span_expected_tier += r["tier"] == expected_tier
    return c


def _labels_and_truth(con, ev: RunEvidence) -> dict[str, Any]:
    """Runs inside collect_run: the run's labels and its correlation truth counts."""
    from runfmt import queries

    labels = con.sql("SELECT domain, target, intensity, start_ns, end_ns FROM labels ORDER BY start_ns, domain") \
        .to_arrow_table().to_pylist()
    checks = {}
    for name, (domain, query, tier) in CORRELATION_CHECKS.items():
        windows = [lb for lb in labels if lb["domain"] == domain]
        if not windows:
            continue
        counts = CorrelationCounts()
        for lb in windows:
            rows = queries.run(con, query, {"service": ev.workload.service, "lo_ns": lb["start_ns"],
                                            "hi_ns": lb["end_ns"]}).to_pylist()
            counts.add(correlation_counts(rows, tier))
        checks[name] = counts
    return {"labels": labels, "correlation": checks}


# --- intensity ---------------------------------------------------------------------------


def intensity_key(scenario: str, labels: Sequence[Mapping[str, Any]]) -> str:
    """Which fault at which setting: 'dns_latency ms=120'; a mixed run lists each part's
    parameters; a baseline run is its scenario."""
    params = []
    for lb in labels:
        raw = lb.get("intensity")
        try:
            values = json.loads(raw) if raw else {}
        except ValueError:
            values = {"intensity": raw}
        text = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))
        if text and text not in params:
            params.append(text)
    return " ".join([scenario, *params])


def by_intensity(runs: Sequence[RunScore]) -> list[dict[str, Any]]:
    """Recall per fault setting (micro over the true domains of its windows), with the fault
    windows that never paged: a mild setting may move the SLO too little to page."""
    groups: dict[str, list[RunScore]] = {}
    for r in runs:
        if r.labels:
            groups.setdefault(intensity_key(r.scenario, r.labels), []).append(r)
    out = []
    for key, members in sorted(groups.items()):
        c = np.sum([run_counts(r) for r in members], axis=0)
        tp, fn = int(c[TP:TP + _D].sum()), int(c[FN:FN + _D].sum())
        out.append({"intensity": key, "runs": len(members), "paged_fault_windows": int(c[ABST + 2]),
                    "unpaged_fault_windows": sum(r.unpaged_fault_windows for r in members),
                    "hits": tp, "misses": fn, "recall": _ratio(tp, tp + fn)})
    return out


def mixed_recall(runs: Sequence[RunScore]) -> dict[str, Any]:
    """Recall on runs with two or more true domains: each cause found is a hit, each missed a miss."""
    mixed = [r for r in runs if len({lb["domain"] for lb in r.labels}) >= 2]
    c = np.sum([run_counts(r) for r in mixed], axis=0) if mixed else np.zeros(N_COUNTS, np.int64)
    m = metrics_from_counts(c)
    tp, fn = int(c[TP:TP + _D].sum()), int(c[FN:FN + _D].sum())
    return {"runs": len(mixed), "hits": tp, "misses": fn, "recall": _ratio(tp, tp + fn),
            "recall_by_domain": {d: v["recall"] for d, v in m["per_domain"].items() if v["support"]}}


# --- the split -------------------------------------------------------------------------


def split_runs(infos: Sequence[RunInfo], seed: int = SEED, train_fraction: float = TRAIN_FRACTION
               ) -> tuple[list[str], list[str]]:
    """(train run ids, test run ids): per scenario, seeded shuffle, floor(n * fraction) train."""
    if not 0 <= train_fraction < 1:
        raise ValueError(f"train_fraction must be in [0, 1), got {train_fraction}")
    rng = np.random.default_rng(seed)
    by_scenario: dict[str, list[str]] = {}
    for info in infos:
        by_scenario.setdefault(info.scenario, []).append(info.run_id)
    train, test = [], []
    for scenario in sorted(by_scenario):
        ids = sorted(by_scenario[scenario])
        order = [ids[i] for i in rng.permutation(len(ids))]
        k = math.floor(len(ids) * train_fraction)
        train += order[:k]
        test += order[k:]
    return sorted(train), sorted(test)


# --- the result ------------------------------------------------------------------------


@dataclass
class ScoreResult:
    """Attribution and correlation scores over the test runs (module docstring)."""

    test_runs: list[str]
    train_runs: list[str]
    split: dict[str, Any]
    runs: list[dict]  # per run: id, scenario, tag, role, mode, signals, windows ...
    class_balance: dict[str, int]  # class -> test runs holding it
    windows_per_class: dict[str, int]
    per_domain: dict[str, dict[str, Any]]
    precision: Metric
    recall: Metric
    f1: Metric
    abstain_rate: Metric
    abstain_rate_fault: Metric
    abstain_rate_none: Metric
    abstain_rate_quiet: Metric  # every no-fault window, paging or not (docs/attribution.md)
    detection_delay_s: Metric
    detected: int
    faulted: int
    confusion: dict[str, dict[str, int]]
    unpaged_fault_windows: int
    windows: int
    correlation: dict[str, dict[str, Any]]
    exploratory: bool
    exploratory_reasons: list[str]
    not_evaluated: list[str]
    model: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    resamples: int = RESAMPLES
    seed: int = SEED
    baseline: dict[str, Any] = field(default_factory=dict)  # the scikit-learn baseline's metrics
    by_intensity: list[dict[str, Any]] = field(default_factory=list)  # recall per fault setting
    mixed: dict[str, Any] = field(default_factory=dict)  # recall on runs with two or more causes

    @property
    def n_runs(self) -> int:
        return len(self.test_runs)

    def fitted_model(self) -> Model:
        """The model this scoring used, with its provenance: training runs, split, the git
        commit, and its score on the test runs (what `sloan score --save-model` writes)."""
        from runfmt.manifest import git_sha

        model = Model.from_dict(self.model)
        model.trained.update(git_sha=git_sha(), score={
            "precision": self.precision.value, "recall": self.recall.value, "f1": self.f1.value,
            "test_runs": self.n_runs, "exploratory": self.exploratory,
            "class_balance": dict(self.class_balance)})
        return model

    def gate(self, config: Mapping) -> tuple[bool, list[str]]:
        """(passed, reasons it failed). Exploratory never passes."""
        g = config["gate"]
        reasons = []
        if self.exploratory:
            reasons.append("exploratory: " + "; ".join(self.exploratory_reasons)
                           + " (an exploratory result never passes the gate)")
        if self.precision.value is None or self.precision.value < g["min_precision"]:
            reasons.append(f"macro precision {_show(self.precision.value)} < gate.min_precision "
                           f"{g['min_precision']}")
        if self.recall.value is None or self.recall.value < g["min_recall"]:
            reasons.append(f"macro recall {_show(self.recall.value)} < gate.min_recall {g['min_recall']}")
        return not reasons, reasons

    def to_dict(self) -> dict:
        return {
            "exploratory": self.exploratory, "exploratory_reasons": list(self.exploratory_reasons),
            "n_runs": self.n_runs, "test_runs": list(self.test_runs), "train_runs": list(self.train_runs),
            "split": self.split, "class_balance": dict(self.class_balance),
            "windows_per_class": dict(self.windows_per_class), "windows": self.windows,
            "precision": self.precision.to_dict(), "recall": self.recall.to_dict(), "f1": self.f1.to_dict(),
            "per_domain": {d: {k: (v.to_dict() if isinstance(v, Metric) else v) for k, v in m.items()}
                           for d, m in self.per_domain.items()},
            "abstain_rate": self.abstain_rate.to_dict(),
            "abstain_rate_fault": self.abstain_rate_fault.to_dict(),
            "abstain_rate_none": self.abstain_rate_none.to_dict(),
            "abstain_rate_quiet": self.abstain_rate_quiet.to_dict(),
            "detection_delay_s": self.detection_delay_s.to_dict(), "detected": self.detected,
            "faulted": self.faulted, "unpaged_fault_windows": self.unpaged_fault_windows,
            "confusion": self.confusion, "correlation": self.correlation,
            "not_evaluated": list(self.not_evaluated), "resamples": self.resamples, "seed": self.seed,
            "runs": self.runs, "model": self.model, "notes": list(self.notes),
            "by_intensity": self.by_intensity, "mixed": self.mixed,
            "baseline": {k: (v.to_dict() if isinstance(v, Metric) else
                             {d: m.to_dict() for d, m in v.items()} if k == "recall_by_domain" else v)
                         for k, v in self.baseline.items()},
        }


def _show(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def summarize(runs: Sequence[RunScore], *, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """Every attribution metric with its CI95 over `runs` (pure: no I/O)."""
    counts = np.array([run_counts(r) for r in runs]) if runs else np.zeros((0, N_COUNTS), np.int64)
    point = metrics_from_counts(counts.sum(axis=0))
    delays = [r.delay_s for r in runs]
    faulted = [r for r in runs if r.fault_start_ns is not None]
    rates = ("abstain_rate", "abstain_rate_fault", "abstain_rate_none", "abstain_rate_quiet")
    boots: dict[str, list] = {k: [] for k in ("precision", "recall", "f1", *rates, "delay")}
    per_boot: dict[str, dict[str, list]] = {d: {"precision": [], "recall": [], "f1": []} for d in DOMAINS}
    if can_bootstrap([r.scenario for r in runs]):
        for idx in resample_indices([r.scenario for r in runs], resamples, seed):
            m = metrics_from_counts(counts[idx].sum(axis=0))
            for k in ("precision", "recall", "f1", *rates):
                boots[k].append(m[k])
            for d in DOMAINS:
                for k in ("precision", "recall", "f1"):
                    per_boot[d][k].append(m["per_domain"][d][k])
            boots["delay"].append(_median([delays[i] for i in idx]))

    def metric(key: str, value) -> Metric:
        return Metric(value, percentile_ci(boots[key]) if value is not None else None)

    per_domain = {}
    for d in DOMAINS:
        pd = point["per_domain"][d]
        per_domain[d] = {**{k: Metric(pd[k], percentile_ci(per_boot[d][k]) if pd[k] is not None else None)
                            for k in ("precision", "recall", "f1")},
                         "tp": pd["tp"], "fp": pd["fp"], "fn": pd["fn"], "support": pd["support"]}
    return {
        "per_domain": per_domain, "in_play": point["in_play"],
        "precision": metric("precision", point["precision"]), "recall": metric("recall", point["recall"]),
        "f1": metric("f1", point["f1"]), "abstain_rate": metric("abstain_rate", point["abstain_rate"]),
        "abstain_rate_fault": metric("abstain_rate_fault", point["abstain_rate_fault"]),
        "abstain_rate_none": metric("abstain_rate_none", point["abstain_rate_none"]),
        "abstain_rate_quiet": metric("abstain_rate_quiet", point["abstain_rate_quiet"]),
        "detection_delay_s": metric("delay", _median(delays)),
        "detected": sum(d is not None for d in delays), "faulted": len(faulted),
        "confusion": confusion(runs), "windows": point["windows"],
    }


def class_balance(runs: Sequence[RunScore]) -> tuple[dict[str, int], dict[str, int]]:
    by_runs: dict[str, int] = {}
    by_windows: dict[str, int] = {}
    for r in runs:
        for c in r.classes:
            by_runs[c] = by_runs.get(c, 0) + 1
        for w in r.windows:
            for c in (w.truth or {NONE}):
                by_windows[c] = by_windows.get(c, 0) + 1
    return dict(sorted(by_runs.items())), dict(sorted(by_windows.items()))


def exploratory_reasons(balance: Mapping[str, int], n_runs: int) -> list[str]:
    reasons = [f"class {c} has {n} test run(s) < {MIN_RUNS_PER_CLASS}"
               for c, n in balance.items() if n < MIN_RUNS_PER_CLASS]
    if n_runs == 0:
        reasons.append("no test run")
    return reasons


def correlation_summary(per_run: Mapping[str, Mapping[str, CorrelationCounts]], strata: Mapping[str, str],
                        *, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (domain, _query, tier) in CORRELATION_CHECKS.items():
        runs = sorted(r for r, checks in per_run.items() if name in checks)
        if not runs:
            continue
        total = CorrelationCounts()
        for r in runs:
            total.add(per_run[r][name])
        p_boot, r_boot = [], []
        if can_bootstrap([strata[r] for r in runs]):
            for idx in resample_indices([strata[r] for r in runs], resamples, seed):
                c = CorrelationCounts()
                for i in idx:
                    c.add(per_run[runs[i]][name])
                p_boot.append(c.precision)
                r_boot.append(c.recall)
        out[name] = {
            "domain": domain, "expected_tier": tier, "runs": len(runs),
            "precision": Metric(total.precision,
                                percentile_ci(p_boot) if total.precision is not None else None).to_dict(),
            "recall": Metric(total.recall, percentile_ci(r_boot) if total.recall is not None else None).to_dict(),
            "truth_pairs": total.truth, "no_kernel_event": total.no_event, "matched": total.matched,
            "right_span": total.right_span, "right_span_expected_tier": total.right_span_expected_tier,
            "right_span_tiers": dict(sorted(total.tiers.items())),
            "wrong_span_tiers": dict(sorted(total.wrong_tiers.items())),
        }
    return out


def _scored(ev: RunEvidence, verdicts) -> RunScore:
    """A run's score from a verdict on every window, (SloWindow, predicted, blamed) in
    window order: its paging windows scored, the fault windows that did not page and the
    no-fault windows (paging or not) counted."""
    labels = ev.extra["labels"]
    windows, unpaged, quiet = [], 0, []
    for w, predicted, blamed in verdicts:
        truth = window_truth(labels, w.start_ns, w.end_ns)
        if w.violating:
            windows.append(ScoredWindow(w.index, w.start_ns, w.end_ns, truth, predicted, blamed))
        elif truth:
            unpaged += 1
        if not truth:
            quiet.append(predicted == UNKNOWN)
    return RunScore(ev.info.run_id, ev.info.scenario, labels, windows, unpaged, len(quiet), sum(quiet))


def _run_score(ev: RunEvidence, model: Model) -> RunScore:
    return _scored(ev, [(wa.window, wa.predicted, wa.blamed)
                        for wa in attribute_evidence(ev, model, all_windows=True).windows])


BASELINE = "scikit-learn LogisticRegression, one per domain over all feature shifts, L2, C=1"


def baseline_runs(train: Sequence[RunEvidence], test: Sequence[RunEvidence]) -> list[RunScore]:
    """The test runs scored by an off-the-shelf model, fitted on the same training windows:
    what the attribution model's own solver (sparse signatures, priors, non-negative weights)
    must beat to earn its place. Same threshold (ABSTAIN_BELOW) and same windows."""
    from sklearn.linear_model import LogisticRegression

    rows, truth = training_rows(train)
    X = np.array([[r[f] for f in FEATURE_NAMES] for r in rows]) if rows else np.zeros((0, len(FEATURE_NAMES)))
    Y = indicators(truth) if rows else np.zeros((0, len(DOMAINS)), int)
    models = {d: LogisticRegression(C=1.0, max_iter=1000).fit(X, Y[:, i])
              for i, d in enumerate(DOMAINS) if 0 < Y[:, i].sum() < len(Y)}
    def verdict(w, x):
        row = np.array([[x[f] for f in FEATURE_NAMES]])
        post = {d: float(m.predict_proba(row)[0, 1]) for d, m in models.items()}
        blamed = frozenset(d for d, p in post.items() if p >= ABSTAIN_BELOW)
        top = max(post, key=post.get, default=UNKNOWN)
        return w, (top if top in blamed else UNKNOWN), blamed

    return [_scored(ev, [verdict(w, x) for w, x in ev.shift_rows()]) for ev in test]


def training_rows(evidence: Sequence[RunEvidence]) -> tuple[list[dict[str, float]], list[frozenset[str]]]:
    """Every window (violating or not) of the given runs: feature shifts and true domains."""
    rows, truth = [], []
    for ev in evidence:
        for w, x in ev.shift_rows():
            rows.append(x)
            truth.append(window_truth(ev.extra["labels"], w.start_ns, w.end_ns))
    return rows, truth


def _leave_one_intensity_out(evidence: Mapping[str, RunEvidence]) -> tuple[list[RunScore], Model]:
    """Every run scored by a model that never saw its fault setting (scikit-learn's
    LeaveOneGroupOut over intensity keys; each baseline run is a group of its own).
    Returns the scores and the model fitted on all runs (for the record, not for scoring)."""
    from sklearn.model_selection import LeaveOneGroupOut

    ids = sorted(evidence)
    groups = [intensity_key(evidence[r].info.scenario, evidence[r].extra["labels"])
              if evidence[r].extra["labels"] else f"none {r}" for r in ids]
    scored = []
    for train_idx, test_idx in LeaveOneGroupOut().split(ids, groups=groups):
        fold = fit(*training_rows([evidence[ids[i]] for i in train_idx]))
        scored += [_run_score(evidence[ids[i]], fold) for i in test_idx]
    everything = fit(*training_rows(list(evidence.values())),
                     trained={"runs": ids, "split": {"method": "all runs (leave-one-intensity-out scoring)"}})
    return sorted(scored, key=lambda r: r.run_id), everything


def score_runs(paths, config: Mapping, *, model: Model | None = None, seed: int = SEED,
               train_fraction: float = TRAIN_FRACTION, resamples: int = RESAMPLES,
               budget: float | None = None, split_by: str = "scenario") -> ScoreResult:
    """Scores attribution (and correlation) on the labelled runs below `paths`.
    split_by: "scenario" (a seeded share of each scenario's runs trains) or "intensity"
    (leave one fault setting out)."""
    from analyze.session import find_runs

    notes: list[str] = []
    evidence: dict[str, RunEvidence] = {}
    for run_dir in find_runs([Path(p) for p in paths]):
        if not (Path(run_dir) / "labels.parquet").is_file():
            notes.append(f"{run_dir}: no labels.parquet, left out")
            continue
        ev = collect_run(run_dir, config, budget=budget, also=_labels_and_truth)
        if ev.info.run_id in evidence:
            notes.append(f"{run_dir}: run id {ev.info.run_id} seen twice, left out")
            continue
        evidence[ev.info.run_id] = ev
    if not evidence:
        raise DataError(f"nothing to score: no labelled run (with labels.parquet) under "
                        f"{', '.join(str(p) for p in paths)}",
                        "score lab runs: 'slocap lab run' writes labels.parquet beside each run")
    infos = [ev.info for ev in evidence.values()]
    if split_by == "intensity":
        if model is not None:
            raise ValueError("a given model is scored on every run it was not trained on: no split")
        scored, model = _leave_one_intensity_out(evidence)
        train, test = [], sorted(evidence)
        split = {"method": "leave one intensity out: each fault setting (scenario and parameters) is "
                           "tested by a model fitted on every other run; each baseline run alike"}
    elif model is None:
        train, test = split_runs(infos, seed, train_fraction)
        split = {"method": "per scenario, seeded shuffle, floor(n * train_fraction) train",
                 "seed": seed, "train_fraction": train_fraction}
        model = fit(*training_rows([evidence[r] for r in train]),
                    trained={"runs": train, "split": split})
    else:
        seen = set(model.trained.get("runs") or [])
        train = sorted(r for r in evidence if r in seen)
        test = sorted(r for r in evidence if r not in seen)
        split = {"method": "model given: every run it was not trained on tests",
                 "model_split": model.trained.get("split")}
        if train:
            notes.append(f"{len(train)} run(s) left out of the test set: the model was trained on them")
    if split_by != "intensity":
        scored = [_run_score(evidence[r], model) for r in test]
    summary = summarize(scored, resamples=resamples, seed=seed)
    base = summarize(baseline_runs([evidence[r] for r in train], [evidence[r] for r in test]),
                     resamples=resamples, seed=seed) if split_by != "intensity" else None
    baseline = {} if base is None else {"model": BASELINE, "trained_on": "the same training runs" if train else "nothing (no training run)",
                **{k: base[k] for k in ("precision", "recall", "f1", "abstain_rate_none", "abstain_rate_quiet")},
                "recall_by_domain": {d: m["recall"] for d, m in base["per_domain"].items()
                                                     if m["support"]}}
    balance, per_windows = class_balance(scored)
    reasons = exploratory_reasons(balance, len(scored))
    not_evaluated = [d for d in DOMAINS if d not in balance]
    correlation = correlation_summary({r: evidence[r].extra["correlation"] for r in evidence},
                                      {r: evidence[r].info.scenario for r in evidence},
                                      resamples=resamples, seed=seed)
    by_id = {s.run_id: s for s in scored}
    runs = []
    for run_id, ev in sorted(evidence.items(), key=lambda kv: (kv[1].info.scenario, kv[0])):
        s = by_id.get(run_id)
        runs.append({**ev.info.to_dict(), "role": "test" if run_id in by_id else "train",
                     "classes": sorted(s.classes) if s else sorted({lb["domain"] for lb in ev.extra["labels"]}
                                                                   or {NONE}),
                     "windows": len(ev.slo.windows), "violating": len(ev.slo.violating),
                     "delay_s": None if s is None or s.delay_s is None else round(s.delay_s, 3)})
    return ScoreResult(
        test_runs=test, train_runs=train, split={**split, "train": train, "test": test}, runs=runs,
        class_balance=balance, windows_per_class=per_windows, per_domain=summary["per_domain"],
        precision=summary["precision"], recall=summary["recall"], f1=summary["f1"],
        abstain_rate=summary["abstain_rate"], abstain_rate_fault=summary["abstain_rate_fault"],
        abstain_rate_none=summary["abstain_rate_none"], abstain_rate_quiet=summary["abstain_rate_quiet"],
        detection_delay_s=summary["detection_delay_s"],
        detected=summary["detected"], faulted=summary["faulted"], confusion=summary["confusion"],
        unpaged_fault_windows=sum(s.unpaged_fault_windows for s in scored), windows=summary["windows"],
        correlation=correlation, exploratory=bool(reasons), exploratory_reasons=reasons,
        not_evaluated=not_evaluated, model=model.to_dict(), notes=notes, resamples=resamples, seed=seed,
        baseline=baseline, by_intensity=by_intensity(scored), mixed=mixed_recall(scored))
