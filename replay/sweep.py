"""The severity sweep: every fault at three settings, from one that barely moves the SLO
to a severe one, for a labelled set whose accuracy figures hold beyond one setting.

`slocap lab sweep` runs what is missing of the plan below into a runs root: a setting
that already has `reps` complete runs there is skipped, so a sweep cut short (or run a
few hours at a time) goes on where it stopped. `sloan score --runs ROOT` then reports
recall per setting, and `--split intensity` leaves one setting out at a time.

The middle setting of each fault is its default (replay/faults.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from replay.faults import MIXED, SCENARIOS
from replay.runner import BASELINE

# scenario -> settings, mild to severe (each over the scenario's defaults)
SETTINGS: dict[str, tuple[dict, ...]] = {
    "dns_latency": ({"ms": 100}, {"ms": 900}, {"ms": 2000}),
    "tcp_loss": ({"every": 10}, {"every": 2}, {"every": 3, "drop": 2}),
    "connect_stall": ({"every": 4, "drop": 1}, {"every": 4, "drop": 3}, {"every": 8, "drop": 7}),
    "tls_slowdown": ({"ms": 300}, {"ms": 1500}, {"ms": 3000}),
    "cpu_contention": ({"hogs": 2, "cpus": 1.0}, {"hogs": 3, "cpus": 0.3}, {"hogs": 3, "cpus": 0.2}),
    "provider_throttle": ({"fraction": 0.2}, {"fraction": 0.8}, {"fraction": 1.0}),
    "provider_error": ({"fraction": 0.5}, {"fraction": 0.9}, {"fraction": 1.0}),
    "retrieval_slowdown": ({"extra_ms": 400}, {"extra_ms": 1000}, {"extra_ms": 2000}),
    "memory_pressure": ({"squeeze_mb": 8}, {"squeeze_mb": 32}, {"squeeze_mb": 48}),
}
BASELINE_FACTOR = 3  # baseline runs per sweep rep: as many as one fault has over its settings


@dataclass(frozen=True)
class Step:
    """One scenario at one setting (None: defaults, for baseline and mixed pairs), `reps` times."""

    scenario: str
    params: dict | None
    reps: int

    @property
    def intensity(self) -> str | None:
        """As labels.parquet records it (replay/faults.py): the scenario's full parameters."""
        if self.params is None:
            return None
        return json.dumps({**SCENARIOS[self.scenario].defaults, **self.params}, sort_keys=True)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in (self.params or {}).items()) or "defaults"
        return f"{self.scenario} ({shown})"


def plan(reps: int, scenarios: list[str] | None = None) -> list[Step]:
    """The whole sweep, or the part of it for `scenarios`."""
    steps = [Step(BASELINE, None, reps * BASELINE_FACTOR)]
    steps += [Step(s, p, reps) for s, settings in SETTINGS.items() for p in settings]
    steps += [Step(m, None, reps) for m in MIXED]
    return [s for s in steps if not scenarios or s.scenario in scenarios]


def _done_runs(runs_root: Path, tag: str, scenario: str) -> Iterator[str | None]:
    """The intensity of each complete labelled run of `scenario` (None: no fault parameters)."""
    for manifest in sorted((runs_root / f"tag={tag}" / f"scenario={scenario}").glob("run=*/manifest.json")):
        labels = manifest.parent / "labels.parquet"
        try:
            if not json.loads(manifest.read_text()).get("complete") or not labels.is_file():
                continue
            rows = pq.read_table(labels, columns=["intensity"]).to_pylist()
        except (OSError, ValueError):
            continue
        yield rows[0]["intensity"] if rows and len(rows) == 1 else None


def missing(step: Step, runs_root: Path, tag: str) -> int:
    """How many runs of `step` the runs root still lacks."""
    have = sum(1 for i in _done_runs(runs_root, tag, step.scenario)
               if step.params is None or i == step.intensity)
    return max(step.reps - have, 0)
