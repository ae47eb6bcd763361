"""Incident reproducibility (`sloan repro`): how much key metrics vary across reruns
of the same tag, scenario, seed and profile (coefficient of variation, gate ≤ 10 %)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from analyze.compare import (
    RunRecord,
    _has_hive_columns,
    _open,
    _per_run,
    _records,
)
from analyze.stats import coefficient_of_variation
from runfmt.errors import DataError

CV_GATE = 0.10

REPRO_METRICS = (
    ("ttft_p95_ms", "TTFT p95", "ms"),
    ("e2e_p95_ms", "E2E p95", "ms"),
    ("error_rate", "error rate", ""),
    ("fault_ttft_p95_ms", "fault-phase TTFT p95", "ms"),
)
REPRO_RERUNS = 3  # docs/architecture.md: CV <= 10 % across three reruns


@dataclass
class ReproRow:
    tag: str
    scenario: str
    seed: int | None
    profile: str
    metric: str
    label: str
    unit: str
    runs: int
    values: list[float]
    mean: float | None
    cv: float | None  # sample standard deviation / mean; None below two runs

    @property
    def flagged(self) -> bool:
        return self.cv is not None and self.cv > CV_GATE

    def to_dict(self) -> dict:
        return {**asdict(self), "flagged": self.flagged}


@dataclass
class ReproReport:
    rows: list[ReproRow]
    notes: list[str]
    cv_gate: float = CV_GATE

    @property
    def flagged(self) -> list[ReproRow]:
        return [r for r in self.rows if r.flagged]

    @property
    def judged(self) -> bool:
        """At least one metric had two or more reruns."""
        return any(r.cv is not None for r in self.rows)

    def to_dict(self) -> dict:
        return {"cv_gate": self.cv_gate, "rows": [r.to_dict() for r in self.rows], "notes": self.notes,
                "flagged": len(self.flagged)}


def _fault_phase(con) -> dict:
    """Request metrics of each run's fault phase (none without requests in the hive layout)."""
    return _per_run(con, "compare_run_requests", {"phase": "fault"}) if _has_hive_columns(con, "requests") else {}


def reproducibility(paths, *, skip_bad: bool = False) -> ReproReport:
    """CV of key metrics across reruns of the same tag, scenario, seed and profile."""
    runs = _open(paths, skip_bad)
    try:
        (records, metric_notes), fault = runs.use(lambda con: (_records(con), _fault_phase(con)))
    finally:
        runs.con.close()
    notes = [f"skipped: {s}" for s in runs.skipped] + metric_notes
    for r in records:
        r.values["fault_ttft_p95_ms"] = fault.get((r.tag, r.scenario, r.run), {}).get("ttft_p95_ms")
    incomplete = [r for r in records if not r.complete]
    if incomplete:
        notes.append(f"{len(incomplete)} incomplete run(s) left out: " + ", ".join(str(r.path) for r in incomplete))
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if r.complete:
            groups.setdefault((r.tag, r.scenario, r.seed if r.seed is not None else -1, r.profile), []).append(r)
    rows = []
    for (tag, scenario, seed, profile), rs in sorted(groups.items()):
        if len(rs) < REPRO_RERUNS:
            notes.append(f"{tag}/{scenario} seed {seed} {profile}: {len(rs)} rerun(s), "
                         f"the reproducibility rule asks for {REPRO_RERUNS}")
        for key, label, unit in REPRO_METRICS:
            vals = [float(r.values[key]) for r in rs if r.values.get(key) is not None]
            if not vals:
                continue  # e.g. no fault phase in the baseline scenario
            rows.append(ReproRow(tag, scenario, None if seed == -1 else seed, profile, key, label, unit,
                                 len(vals), vals, float(np.mean(vals)), coefficient_of_variation(vals)))
    if not rows:
        raise DataError(f"no run with requests under {', '.join(str(p) for p in paths)}",
                        "reproducibility needs lab runs (slocap lab run) with requests/")
    return ReproReport(rows, notes)
