"""Direct overhead accounting: what the recorder cost the machine, from exact clocks.

    recorder CPU = user + system time of every thread of the process (getrusage)
    BPF time     = run_time_ns of its programs (bpf_prog_info; the kernel's BPF
                   stats are on while it records, safety.bpf_run_time)
    overhead %   = (recorder CPU + BPF time) / (wall time × CPUs) × 100

Both terms are counted by the kernel, not sampled or estimated, so the figure
is exact for the run. Per window (one resource sample a second) the same sum
gives the distribution: its median is the headline, and `sloan gate` and
bench/overhead.py read it. Per signal: its programs' BPF time plus its share
of the drain loop by the events it produced (capture/safety.py).

Where the stats cannot stay on (safety.bpf_run_time "calibrate"), the BPF term
is the programs' own run counts times the ns per run measured while the stats
were on for the first safety.calibrate_s seconds: `method: "calibrated"`, with
the ns per run in `calibration` (capture/safety.py Calibration).

Without BPF stats (the kernel refused them, or safety.bpf_run_time is off) the
BPF term is missing: the manifest then says `method: "cpu_only"`, and a gate
cannot judge the overhead from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from capture.safety import Sample


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


@dataclass
class Accounting:
    """Running sums over the resource samples of one recording (bounded: a float a second)."""

    ncpu: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    bpf_ns: int = 0
    intake_cpu_s: float = 0.0
    kernel_cpu_s: float = 0.0
    windows_pct: list[float] = field(default_factory=list)
    signal_cost_s: dict[str, float] = field(default_factory=dict)

    def add(self, s: Sample) -> None:
        self.wall_s += s.interval_s
        self.cpu_s += s.cpu_user_s + s.cpu_sys_s
        self.bpf_ns += s.bpf_run_ns
        self.intake_cpu_s += s.intake_cpu_s
        self.kernel_cpu_s += s.kernel_cpu_s
        self.windows_pct.append(s.overhead_pct)
        for name, cost in s.signal_cost_s.items():
            self.signal_cost_s[name] = self.signal_cost_s.get(name, 0.0) + cost

    def _pct(self, seconds: float) -> float | None:
        return round(100 * seconds / (self.wall_s * self.ncpu), 4) if self.wall_s else None

    def to_manifest(self, method: str, bpf_totals: dict[str, tuple[int, int]],
                    calibration: dict | None = None) -> dict:
        """The manifest's `overhead`. method: direct, calibrated or cpu_only
        (ResourceMonitor.method); bpf_totals: signal -> (run time ns, runs) of its
        programs since the stats went on."""
        per_signal = {}
        for name in sorted(set(self.signal_cost_s) | set(bpf_totals)):
            ns, runs = bpf_totals.get(name, (0, 0))
            per_signal[name] = {"pct": self._pct(self.signal_cost_s.get(name, 0.0)),
                                "bpf_run_s": round(ns / 1e9, 6), "bpf_runs": runs,
                                "bpf_ns_per_run": round(ns / runs, 1) if runs else None}
        out = {
            "method": method,
            "formula": "(recorder user+system CPU, all threads + its BPF programs' run_time_ns) "
                       "/ (wall x CPUs)",
            "bpf_stats": method == "direct",
            "wall_s": round(self.wall_s, 3), "cpus": self.ncpu,
            "recorder_cpu_s": round(self.cpu_s, 4), "bpf_run_s": round(self.bpf_ns / 1e9, 6),
            "pct": self._pct(self.cpu_s + self.bpf_ns / 1e9),
            "windows": len(self.windows_pct),
            "window_median_pct": _round(_median(self.windows_pct)),
            "window_p95_pct": _round(_quantile(self.windows_pct, 0.95)),
            "kernel_pct": self._pct(self.kernel_cpu_s + self.bpf_ns / 1e9),
            "intake_pct": self._pct(self.intake_cpu_s),
            "per_signal": per_signal,
        }
        if calibration is not None:
            out["calibration"] = calibration
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
