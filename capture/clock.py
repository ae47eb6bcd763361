"""Monotonic → wall clock anchor: BPF timestamps are CLOCK_MONOTONIC."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClockAnchor:
    monotonic_ns: int
    realtime_ns: int
    uncertainty_ns: int  # width of the tightest monotonic bracket around the wall read

    @property
    def offset_ns(self) -> int:
        return self.realtime_ns - self.monotonic_ns

    def to_dict(self) -> dict:
        return {**asdict(self), "offset_ns": self.offset_ns}


def take_anchor(samples: int = 7) -> ClockAnchor:
    """Brackets a wall-clock read between two monotonic reads; keeps the tightest."""
    best: ClockAnchor | None = None
    for _ in range(samples):
        m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        wall = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m2 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        anchor = ClockAnchor((m1 + m2) // 2, wall, m2 - m1)
        if best is None or anchor.uncertainty_ns < best.uncertainty_ns:
            best = anchor
    assert best is not None
    return best
