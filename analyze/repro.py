"""Incident reproducibility: how much a metric varies across reruns of the
same scenario, tag and seed (coefficient of variation, gate ≤ 10 %)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analyze.session import open_runs
from runfmt import queries

CV_GATE = 0.10


@dataclass
class Reproducibility:
    tag: str
    scenario: str
    runs: int
    values: list[float]  # the metric per run
    cv: float | None  # sample standard deviation / mean; None below two runs

    @property
    def passes(self) -> bool | None:
        return None if self.cv is None else self.cv <= CV_GATE


def coefficient_of_variation(values: list[float]) -> float | None:
    if len(values) < 2 or np.mean(values) == 0:
        return None
    return float(np.std(values, ddof=1) / np.mean(values))


def fault_ttft_p95(paths: list[Path]) -> list[Reproducibility]:
    runs = open_runs(paths)
    try:
        rows = queries.run(runs.con, "fault_phase_ttft_p95").to_pylist()
    finally:
        runs.con.close()
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["tag"], r["scenario"]), []).append(r["ttft_p95_ms"])
    return [Reproducibility(tag, scenario, len(v), v, coefficient_of_variation(v))
            for (tag, scenario), v in sorted(groups.items())]
