"""The recorder watches its own cost and sheds load above safety.max_overhead_pct.

Overhead = (the recorder's CPU time + its BPF programs' run time) / (wall time ×
CPUs), in percent of the machine. BPF run time is measured by the kernel's
BPF stats, which the monitor switches on while it runs (bpf_enable_stats).

Shedding, one step each time the overhead stays above the limit for
`patience` samples in a row:
  1. raise thresholds: latency thresholds ×4 (fewer outlier events)
  2. sample: keep 1 event in 2, then 1 in 4, then 1 in 8
  3. switch off the costliest signal (most BPF run time), one at a time
Every step is recorded, with the overhead that caused it, in the manifest.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from capture import _libbpf as L
from runfmt.schema import RESOURCES

BPF_STATS_RUN_TIME = 0



@dataclass
class Sample:
    ts_ns: int
    interval_s: float
    cpu_user_s: float
    cpu_sys_s: float
    bpf_run_ns: int
    bpf_runs: int
    rss_bytes: int
    events: int
    overhead_pct: float
    shed_level: int


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _kernel_bpf_stats_on() -> bool:
    try:
        return Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() == "1"
    except OSError:
        return False


class ResourceMonitor:
    """Samples the recorder's CPU, RSS and BPF run time as deltas."""

    def __init__(self, probes: dict, enable_bpf_stats: bool = False) -> None:
        self.probes = probes
        self.ncpu = os.cpu_count() or 1
        # the stats cost every BPF program on the host two clock reads per run:
        # turned on only when asked; used when someone else turned them on
        self._stats_fd = L.lib().bpf_enable_stats(BPF_STATS_RUN_TIME) if enable_bpf_stats else -1
        self.bpf_stats = self._stats_fd >= 0 or _kernel_bpf_stats_on()
        self._last = self._read(0)

    def _read(self, events: int) -> tuple:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        run_ns = runs = 0
        for p in self.probes.values() if self.bpf_stats else ():  # all zero while the stats are off
            ns, cnt = p.run_stats()
            run_ns, runs = run_ns + ns, runs + cnt
        return time.monotonic(), ru.ru_utime, ru.ru_stime, run_ns, runs, events

    def sample(self, events: int, shed_level: int) -> Sample:
        now = self._read(events)
        t0, u0, s0, n0, c0, e0 = self._last
        t1, u1, s1, n1, c1, e1 = now
        self._last = now
        dt = max(t1 - t0, 1e-9)
        # a signal switched off takes its counters with it: never go negative
        bpf_ns, bpf_runs = max(n1 - n0, 0), max(c1 - c0, 0)
        busy = (u1 - u0) + (s1 - s0) + bpf_ns / 1e9
        return Sample(time.time_ns(), dt, u1 - u0, s1 - s0, bpf_ns, bpf_runs, _rss_bytes(),
                      e1 - e0, 100 * busy / (dt * self.ncpu), shed_level)

    def close(self) -> None:
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1


def samples_table(samples: list[Sample]) -> pa.Table:
    cols = {f.name: [getattr(s, f.name) for s in samples] for f in RESOURCES}
    return pa.Table.from_pydict(cols, schema=RESOURCES)


class LoadShedder:
    """Decides the next shedding step when overhead stays above the limit."""

    SAMPLE_SHIFTS = (1, 2, 3)

    def __init__(self, max_overhead_pct: float, patience: int = 3) -> None:
        self.max_overhead_pct = max_overhead_pct
        self.patience = patience
        self.level = 0
        self._over = 0
        self.actions: list[dict] = []

    def observe(self, sample: Sample, probes: dict) -> dict | None:
        """Applies and returns the next step, or None. `probes` maps name → LoadedSignal."""
        self._over = self._over + 1 if sample.overhead_pct > self.max_overhead_pct else 0
        if self._over < self.patience or not probes:
            return None
        self._over = 0
        self.level += 1
        if self.level == 1:
            for p in probes.values():
                p.tune(threshold_shift=2)
            action = {"step": "raise_thresholds", "detail": "latency thresholds x4"}
        elif self.level <= 1 + len(self.SAMPLE_SHIFTS):
            shift = self.SAMPLE_SHIFTS[self.level - 2]
            for p in probes.values():
                p.tune(sample_shift=shift)
            action = {"step": "sample", "detail": f"keep 1 event in {1 << shift}"}
        else:
            costs = {name: p.run_stats()[0] for name, p in probes.items()}
            name = max(costs, key=costs.get)
            action = {"step": "switch_off", "detail": f"signal {name} switched off", "signal": name}
        action.update(ts_ns=sample.ts_ns, overhead_pct=round(sample.overhead_pct, 3), level=self.level)
        self.actions.append(action)
        return action


__all__ = ["RESOURCES", "LoadShedder", "ResourceMonitor", "Sample", "samples_table"]
