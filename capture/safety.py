"""The recorder watches its own cost and sheds load above safety.max_overhead_pct.

Overhead = (the recorder's CPU time + its BPF programs' run time) / (wall time ×
CPUs), in percent of the machine. BPF run time is measured by the kernel's
BPF stats, which the monitor switches on while it runs (bpf_enable_stats).
Where they cannot stay on (safety.bpf_run_time "calibrate"), they are on only
for the first safety.calibrate_s seconds: each signal's ns per program run is
measured then, the programs count their own runs from load (count_runs), and
BPF run time from then on is counted runs × ns per run (method "calibrated").
The overhead is split by what caused it:

  intake  span intake: the receiver threads' request handling (body read,
          parse, id check, the raw request stored; capture/otlp.py times each
          request with time.thread_time) and the main loop's writing of
          otlp_raw parts. Flattening them into spans comes after the recording
          (capture/span_flatten.py), outside the overhead
  kernel  the probes: their BPF run time and the main loop's own CPU (drain,
          convert, kernel tables written) without the otlp_raw parts. A signal's
          own cost is its BPF run time plus the loop's CPU in proportion to
          the events (and histogram rows) it produced
  the rest (gRPC's I/O threads, the HTTP accept thread, a live display)
          counts in the total only.

Shedding, when the overhead stays above the limit for `patience` samples:

* the kernel cost alone is above the limit: one probe step each time,
    1. raise thresholds: latency thresholds ×4 (fewer outlier events)
    2. sample: keep 1 event in 2, then 1 in 4, then 1 in 8
    3. switch off the signal of the highest own cost, one at a time: its
       programs stay attached and count every event as sampled_out (they
       keep 1 in 2^31). A histogram signal (its histograms would go on
       costing), or a switched-off one that is still the costliest, is
       detached instead; its events from then on are not counted, and the
       action says since when.
* otherwise span intake is throttled, never a probe: the receiver admits 1
  export request in 2, 4 ... 32, then none, and refuses the rest with OTLP
  backpressure (HTTP 429 + Retry-After, gRPC RESOURCE_EXHAUSTED + RetryInfo).
  It admits twice as many again once the overhead with the intake cost doubled
  has stayed below 90 % of the limit for 2 × `patience` samples.

Every step is recorded in the manifest with the overheads that caused it and
which cost (`cause`: kernel or intake).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from capture import _libbpf as L
from runfmt.schema import RESOURCES

BPF_STATS_RUN_TIME = 0


@dataclass
class Sample:
    ts_ns: int
    interval_s: float
    cpu_user_s: float  # the whole process, every thread
    cpu_sys_s: float
    bpf_run_ns: int
    bpf_runs: int
    rss_bytes: int
    events: int
    overhead_pct: float  # everything: process CPU + BPF run time
    shed_level: int  # probe steps taken so far
    intake_cpu_s: float = 0.0  # span intake: receiver request handling + otlp_raw parts written
    kernel_cpu_s: float = 0.0  # the main loop without otlp_raw parts: drain, convert, kernel tables
    intake_overhead_pct: float = 0.0  # intake_cpu_s over wall × CPUs
    kernel_overhead_pct: float = 0.0  # kernel_cpu_s + BPF run time over wall × CPUs
    spans_refused: int = 0  # in export requests refused with backpressure (protobuf; see capture/otlp.py)
    requests_refused: int = 0  # export requests refused with backpressure
    intake_level: int = 0  # intake throttle level during the interval: admit 1 request in 2**level
    signal_cost_s: dict[str, float] = field(default_factory=dict)  # own cost per signal; not a column


@dataclass(frozen=True)
class IntakeUsage:
    """What span intake cost and refused since the start (cumulative)."""

    cpu_s: float = 0.0  # receiver threads, timed per request
    loop_cpu_s: float = 0.0  # otlp_raw parts written on the thread that calls ResourceMonitor.sample
    spans_refused: int = 0
    requests_refused: int = 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _kernel_bpf_stats_on() -> bool:
    try:
        return Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() == "1"
    except OSError:
        return False


class CpuMeter:
    """CPU time spent inside wrapped calls, per thread (time.thread_time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_thread: dict[int, float] = {}

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                ident = threading.get_ident()
                with self._lock:
                    self._by_thread[ident] = self._by_thread.get(ident, 0.0) + spent

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def cpu_s(self, ident: int | None = None) -> float:
        """Seconds spent by thread `ident` (default: the calling thread)."""
        with self._lock:
            return self._by_thread.get(threading.get_ident() if ident is None else ident, 0.0)


class Calibration:
    """BPF run time without the kernel's stats on: ns per run measured while they are on,
    times the runs the programs count themselves (bpf/common.bpf.h count_run).

    Per signal, its programs together: the mix of their runs (wakeups and switches, say) is
    taken to stay as it was while calibrating. A signal with no run in that time has no
    ns per run; its later runs are counted but its BPF time is left out (`uncalibrated`).
    """

    def __init__(self, probes: dict, seconds: float) -> None:
        self.probes = probes
        self.seconds = seconds
        self._t0 = time.monotonic()
        self.done = False
        self.ns_per_run: dict[str, float | None] = {}
        self._at_end: dict[str, tuple[int, int, int]] = {}  # stats ns, stats runs, counted runs

    def totals(self) -> dict[str, tuple[int, int]]:
        if not self.done:
            stats = {name: p.run_stats() for name, p in self.probes.items()}
            if time.monotonic() - self._t0 < self.seconds:
                return stats
            for name, p in self.probes.items():
                ns, runs = stats[name]
                self.ns_per_run[name] = ns / runs if runs else None
                self._at_end[name] = (ns, runs, p.counted_runs())
            self.done = True
            return stats
        out = {}
        for name, p in self.probes.items():
            ns, runs, counted0 = self._at_end[name]
            more = max(p.counted_runs() - counted0, 0)
            per = self.ns_per_run[name]
            out[name] = (ns + round(more * per) if per is not None else ns, runs + more)
        return out

    def to_manifest(self) -> dict:
        return {"seconds": self.seconds, "done": self.done,
                "ns_per_run": {n: (round(v, 1) if v is not None else None) for n, v in self.ns_per_run.items()},
                "uncalibrated": sorted(n for n, v in self.ns_per_run.items() if v is None)}


class ResourceMonitor:
    """Samples the recorder's CPU, RSS and BPF run time as deltas, split into intake and kernel cost.

    `sample` must be called from the thread that drains the probes (the main loop):
    its thread CPU time is the kernel side's user-space cost.
    """

    def __init__(self, probes: dict, bpf_run_time: bool | str = False, calibrate_s: float = 10.0) -> None:
        """bpf_run_time: True (stats on while recording), "calibrate" (on for the first
        calibrate_s seconds; the probes must have been loaded with count_runs) or False."""
        self.probes = probes
        self.ncpu = os.cpu_count() or 1
        # the stats cost every BPF program on the host two clock reads per run:
        # turned on only when asked; used when someone else turned them on
        kernel_on = _kernel_bpf_stats_on()
        self._stats_fd = L.lib().bpf_enable_stats(BPF_STATS_RUN_TIME) if bpf_run_time else -1
        self.bpf_stats = self._stats_fd >= 0 or kernel_on
        # calibrating only makes sense while the stats are ours to turn off again
        calibrate = bpf_run_time == "calibrate" and self._stats_fd >= 0 and not kernel_on
        self.calibration = Calibration(probes, calibrate_s) if calibrate else None
        self._last = self._read(0)
        self._last_thread = time.thread_time()
        self._last_intake = IntakeUsage()
        self._last_work: dict[str, int] = {}

    @property
    def method(self) -> str:
        """How BPF run time enters the overhead: direct, calibrated or cpu_only (left out)."""
        if self.calibration is not None:
            return "calibrated"
        return "direct" if self.bpf_stats else "cpu_only"

    def _run_stats(self) -> dict[str, tuple[int, int]]:
        """signal -> cumulative (BPF run time ns, runs)."""
        if self.calibration is not None:
            totals = self.calibration.totals()
            if self.calibration.done and self._stats_fd >= 0:  # measured: the host's stats go off
                os.close(self._stats_fd)
                self._stats_fd = -1
            return totals
        if not self.bpf_stats:  # all zero while the stats are off
            return {}
        return {name: p.run_stats() for name, p in self.probes.items()}

    def totals(self) -> dict[str, tuple[int, int]]:
        """signal -> (BPF run time ns, runs) since load, as the overhead counts them; {} without."""
        return self._run_stats()

    def _read(self, events: int) -> tuple:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return time.monotonic(), ru.ru_utime, ru.ru_stime, self._run_stats(), events

    def sample(self, events: int, shed_level: int, *, work: Mapping[str, int] | None = None,
               intake: IntakeUsage | None = None, intake_level: int = 0) -> Sample:
        """`work`: events read + histogram rows per signal, `intake`: IntakeUsage, both since the start."""
        now = self._read(events)
        thread_cpu = time.thread_time()
        t0, u0, s0, r0, e0 = self._last
        t1, u1, s1, r1, e1 = now
        self._last = now
        dt = max(t1 - t0, 1e-9)
        # a signal switched off takes its counters with it: never go negative
        bpf_by_signal = {n: max(ns - r0.get(n, (0, 0))[0], 0) for n, (ns, _) in r1.items()}
        bpf_ns = sum(bpf_by_signal.values())
        bpf_runs = sum(max(c - r0.get(n, (0, 0))[1], 0) for n, (_, c) in r1.items())
        busy = (u1 - u0) + (s1 - s0) + bpf_ns / 1e9

        intake = intake or self._last_intake
        last = self._last_intake
        self._last_intake = intake
        loop_spans = max(intake.loop_cpu_s - last.loop_cpu_s, 0.0)
        loop_cpu = max(thread_cpu - self._last_thread, 0.0)
        self._last_thread = thread_cpu
        kernel_cpu = max(loop_cpu - loop_spans, 0.0)
        intake_cpu = max(intake.cpu_s - last.cpu_s, 0.0) + loop_spans

        work = dict(work or {})
        done = {n: max(work.get(n, 0) - self._last_work.get(n, 0), 0) for n in self.probes}
        self._last_work = work
        total = sum(done.values())
        costs = {n: bpf_by_signal.get(n, 0) / 1e9
                 + kernel_cpu * (done[n] / total if total else 1 / max(len(self.probes), 1))
                 for n in self.probes}
        pct = 100 / (dt * self.ncpu)
        return Sample(time.time_ns(), dt, u1 - u0, s1 - s0, bpf_ns, bpf_runs, _rss_bytes(),
                      e1 - e0, busy * pct, shed_level,
                      intake_cpu_s=intake_cpu, kernel_cpu_s=kernel_cpu,
                      intake_overhead_pct=intake_cpu * pct,
                      kernel_overhead_pct=(kernel_cpu + bpf_ns / 1e9) * pct,
                      spans_refused=max(intake.spans_refused - last.spans_refused, 0),
                      requests_refused=max(intake.requests_refused - last.requests_refused, 0),
                      intake_level=intake_level, signal_cost_s=costs)

    def close(self) -> None:
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1


def samples_table(samples: list[Sample]) -> pa.Table:
    cols = {f.name: [getattr(s, f.name) for s in samples] for f in RESOURCES}
    return pa.Table.from_pydict(cols, schema=RESOURCES)


class Probe(Protocol):
    def tune(self, **values: int) -> None: ...
    def run_stats(self) -> tuple[int, int]: ...
    def counted_runs(self) -> int: ...


class Throttle(Protocol):
    """Span intake admission (capture/otlp.py IntakeThrottle)."""

    MAX_LEVEL: int

    def set_level(self, level: int) -> None: ...
    def describe(self, level: int) -> str: ...


class LoadShedder:
    """Decides the next shedding step when overhead stays above the limit."""

    SAMPLE_SHIFTS = (1, 2, 3)
    OFF_SHIFT = 31  # keep 1 event in 2^31: switched off, every event still counted as sampled_out
    RELAX_BELOW = 0.9  # of the limit: the overhead with the intake cost doubled must stay under it
    MAX_ACTIONS = 500  # listed in the manifest; more are only counted (a long run that keeps flapping)

    def __init__(self, max_overhead_pct: float, patience: int = 3) -> None:
        self.max_overhead_pct = max_overhead_pct
        self.patience = patience
        self.level = 0  # probe steps taken
        self.intake_level = 0  # admit 1 export request in 2**intake_level (none at the throttle's MAX_LEVEL)
        self._kernel_over = 0
        self._intake_over = 0
        self._intake_under = 0
        self._costs: dict[str, float] = {}  # own cost per signal over the current excess
        self.muted: set[str] = set()  # switched off, still attached, counting
        self.detached: set[str] = set()  # switched off, detached: not counted from then on
        self.switched_off: dict[str, dict] = {}  # signal -> {ts_ns, how, detached_ns}
        self.actions: list[dict] = []
        self.actions_not_listed = 0
        self.intake_throttled_s = 0.0  # time spent with intake_level > 0

    @property
    def degraded(self) -> bool:
        return bool(self.actions or self.actions_not_listed)

    def observe(self, sample: Sample, probes: Mapping[str, Probe],
                intake: Throttle | None = None) -> dict | None:
        """Applies and returns the next step, or None. `probes` maps name → LoadedSignal (those still
        attached); `intake` is the receiver's throttle, None when no receiver runs."""
        limit = self.max_overhead_pct
        if self.intake_level:
            self.intake_throttled_s += sample.interval_s
        kernel_over = sample.kernel_overhead_pct > limit
        if kernel_over:
            self._kernel_over += 1
            for name, cost in sample.signal_cost_s.items():
                self._costs[name] = self._costs.get(name, 0.0) + cost
        else:
            self._kernel_over = 0
            self._costs.clear()
        if self._kernel_over >= self.patience and probes:
            self._kernel_over = 0
            action = self._kernel_step(probes)
            self._costs.clear()
            return self._record(action, sample, "kernel")
        if intake is None:
            return None
        # the excess is not the probes' alone: span intake (with the receiver's I/O) is shed
        intake_busy = sample.intake_cpu_s > 0 or sample.requests_refused > 0
        intake_over = sample.overhead_pct > limit and not kernel_over and intake_busy
        self._intake_over = self._intake_over + 1 if intake_over else 0
        doubled = sample.overhead_pct + sample.intake_overhead_pct
        self._intake_under = self._intake_under + 1 if (
            self.intake_level and doubled < self.RELAX_BELOW * limit) else 0
        if self._intake_over >= self.patience and self.intake_level < intake.MAX_LEVEL:
            self._intake_over = 0
            self.intake_level += 1
            intake.set_level(self.intake_level)
            action = {"step": "throttle_intake", "detail": f"span intake: {intake.describe(self.intake_level)}"}
            return self._record(action, sample, "intake")
        if self._intake_under >= 2 * self.patience:
            self._intake_under = 0
            self.intake_level -= 1
            intake.set_level(self.intake_level)
            action = {"step": "relax_intake", "detail": f"span intake: {intake.describe(self.intake_level)}"}
            return self._record(action, sample, "intake")
        return None

    def _kernel_step(self, probes: Mapping[str, Probe]) -> dict:
        self.level += 1
        if self.level == 1:
            for p in probes.values():
                p.tune(threshold_shift=2)
            return {"step": "raise_thresholds", "detail": "latency thresholds x4"}
        if self.level <= 1 + len(self.SAMPLE_SHIFTS):
            shift = self.SAMPLE_SHIFTS[self.level - 2]
            for name, p in probes.items():
                if name not in self.muted:
                    p.tune(sample_shift=shift)
            return {"step": "sample", "detail": f"keep 1 event in {1 << shift}"}
        # the signal whose own cost (BPF run time + its share of the drain) was highest over the excess
        name = max(probes, key=lambda n: (self._costs.get(n, 0.0), probes[n].run_stats()[0]))
        probe = probes[name]
        own = round(self._costs.get(name, 0.0), 6)
        if name not in self.muted and getattr(probe, "hist", None) is None:
            probe.tune(sample_shift=self.OFF_SHIFT)
            self.muted.add(name)
            how, detail = "sampled_out", (f"signal {name} switched off: its programs stay attached and count "
                                          "every event as sampled_out")
        else:
            self.detached.add(name)
            how, detail = "detached", (f"signal {name} switched off (detached): its events from now on "
                                       "are not counted")
        return {"step": "switch_off", "detail": detail, "signal": name, "how": how, "signal_cost_s": own}

    def _record(self, action: dict, sample: Sample, cause: str) -> dict:
        action.update(cause=cause, ts_ns=sample.ts_ns, overhead_pct=round(sample.overhead_pct, 3),
                      kernel_overhead_pct=round(sample.kernel_overhead_pct, 3),
                      intake_overhead_pct=round(sample.intake_overhead_pct, 3),
                      level=self.level, intake_level=self.intake_level)
        if action["step"] == "switch_off":
            off = self.switched_off.setdefault(action["signal"], {"ts_ns": sample.ts_ns})
            off["how"] = action["how"]
            if action["how"] == "detached":
                off["detached_ns"] = sample.ts_ns
        if len(self.actions) < self.MAX_ACTIONS:
            self.actions.append(action)
        else:
            self.actions_not_listed += 1
        return action


__all__ = ["RESOURCES", "CpuMeter", "IntakeUsage", "LoadShedder", "ResourceMonitor", "Sample", "samples_table"]
