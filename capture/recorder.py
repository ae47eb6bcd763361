"""slocap record: probes → ring buffers → Parquet parts + manifest.

One thread: edge-triggered epoll on every ring with a timeout. The kernel
wakes it early only when a ring fills past `capture.wakeup_fill_pct`, so at
low rates it costs one poll per timeout and at high rates it drains in batches.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from capture import columns as S
from capture.accounting import Accounting
from capture.clock import ClockAnchor, take_anchor
from capture.hist import hist_table
from capture.otlp import PROTOBUF, OtlpReceiver, RawRequest, check_request, parse_endpoint, parse_request
from capture.pods import PodResolver
from capture.probe import LoadedSignal
from capture.safety import (
    CpuMeter,
    IntakeUsage,
    LoadShedder,
    ResourceMonitor,
    samples_table,
)
from capture.signals import LIBC, SIGNALS, TRACECTX
from capture.span_flatten import FlattenResult, flatten_raw, raw_parts, raw_table
from capture.spans import AttributeLimits
from runfmt import manifest as M
from runfmt.errors import CaptureError, SloError
from runfmt.runs import new_run_id, run_dir_for
from runfmt.writer import MAX_BUFFER_BYTES, RunWriters

# cpu_steal rides on runqueue's sched_switch program when both record (Recorder._load_signal):
# runqueue's map -> the cpu_steal map it uses instead (bpf/steal.bpf.h)
STEAL_RIDER, STEAL_HOST = "cpu_steal", "runqueue"
STEAL_MAPS = {"steal_hists": "hists", "last_steal": "last_steal", "steal_dropped": "steal_dropped"}

log = logging.getLogger(__name__)


@dataclass
class RecordOptions:
    runs_root: Path
    signals: tuple[str, ...]
    config: dict
    duration_s: float | None = None
    tag: str = "adhoc"
    scenario: str = "adhoc"
    run_id: str | None = None
    libc: str = LIBC
    seed: int | None = None
    profile: str | None = None
    phases: dict | None = None
    variant: str = "auto"  # tracepoint hooks: auto (tp_btf, else raw_tp), tp_btf, raw_tp
    pods_file: Path | None = None  # kubelet /pods JSON: names for pod uids and container ids
    otlp: bool = True  # receive OpenTelemetry spans on config otlp.endpoint / grpc_endpoint
    otlp_optional: bool = False  # a busy OTLP port: record without spans instead of failing at start
    mode: str = "auto"  # "core" (CO-RE, needs BTF) | "bcc" (dns, retransmit) | auto: core where BTF exists
    cgroup: Path | None = None  # record only tasks under this cgroup-v2 directory (CO-RE mode)


@dataclass
class SignalCount:
    read: int = 0  # taken from the ring
    written: int = 0  # in a part file on disk
    dropped: int = 0  # found the ring (or the histogram map) full, counted in the kernel
    hist_rows: int = 0  # per-slice histogram rows in kernel_hist
    sampled_out: int = 0  # left out in the kernel by the rate limit or load shedding

    @property
    def seen(self) -> int:
        return self.read + self.dropped

    def to_dict(self) -> dict:
        return {"seen": self.seen, "written": self.written, "dropped": self.dropped,
                "hist_rows": self.hist_rows, "sampled_out": self.sampled_out}


@dataclass
class Snapshot:
    """What the live status shows; passed to the progress callback."""
    elapsed_s: float
    counts: dict[str, SignalCount]
    rates: dict[str, float]  # events/s since the previous snapshot
    bytes_written: int
    parts: int


@dataclass
class RecordResult:
    run_dir: Path
    complete: bool
    stop_reason: str
    counts: dict[str, SignalCount]
    bytes_written: int
    attach_errors: dict[str, str] = field(default_factory=dict)
    otlp_error: str | None = None


class Stop(threading.Event):
    """Set from a signal handler or another thread; says why the run ended early."""

    reason = "stopped"
    complete = False  # True when the caller ended a run that had no fixed duration as planned

    def __init__(self) -> None:
        super().__init__()
        # readable once stop is asked: the drain loop waits on it beside the rings, so a
        # long poll timeout (capture.poll_timeout_ms) does not delay Ctrl-C
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def request(self, reason: str) -> None:
        self.reason = reason
        self.set()
        os.eventfd_write(self.wake_fd, 1)

    def __del__(self) -> None:
        os.close(self.wake_fd)

    def finish(self, reason: str = "finished") -> None:
        """Ends the run as planned: the manifest says complete."""
        self.complete = True
        self.request(reason)


def _peak_rss_kb() -> int | None:
    """This process's peak RSS since exec (VmHWM). Not ru_maxrss: Linux carries that across
    exec, so a recorder started by a big process would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _exposed_endpoints(otlp_cfg: dict) -> list[str]:
    """The OTLP endpoints that listen beyond loopback (anyone reaching them adds spans)."""
    exposed = []
    for key in ("endpoint", "grpc_endpoint"):
        host, _port = parse_endpoint(otlp_cfg[key])
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name: it may resolve anywhere
            loopback = False
        if not loopback:
            exposed.append(otlp_cfg[key])
    return exposed


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    from capture.preflight import BTF_PATH

    return "core" if BTF_PATH.exists() else "bcc"


def warm_intake() -> None:
    """Takes one empty export request through the intake path before the recorder says it
    is ready. pyarrow imports pandas, when it is installed, on its first conversion of a
    Python list: about 0.17 s of CPU, once. Done here, it counts in the recording's total
    (the manifest's overhead) but not inside the first second of spans (README, "Overhead
    benchmark")."""
    raw_table([RawRequest("http", PROTOBUF, 0, b"", check_request(parse_request(b"", PROTOBUF)))])


class Recorder:
    def __init__(self, opts: RecordOptions) -> None:
        unknown = [s for s in opts.signals if s not in SIGNALS]
        if unknown:
            raise SloError(f"unknown signal {unknown[0]!r}",
                           f"known signals: {', '.join(SIGNALS)}")
        self.opts = opts
        cap = opts.config["capture"]
        self.ring_bytes = cap["ring_buffer_bytes"]
        self.wakeup_bytes = self.ring_bytes * cap["wakeup_fill_pct"] // 100
        self.poll_timeout_s = cap["poll_timeout_ms"] / 1000
        self.mode = resolve_mode(opts.mode)
        self.run_id = opts.run_id or new_run_id()
        self.run_dir = run_dir_for(opts.runs_root, opts.tag, opts.scenario, self.run_id)
        if self.run_dir.exists():
            raise SloError(f"run directory {self.run_dir} exists: run id {self.run_id!r} was used before",
                           "pass another --run-id, or leave it out for a new one")
        self.node = M.host_info()["hostname"]
        self.pods = PodResolver(pods_file=opts.pods_file, node=self.node)
        self.counts = {name: SignalCount() for name in opts.signals}
        self._buffered = {name: 0 for name in opts.signals}  # converted, not yet on disk
        self._raw: dict[str, list[np.ndarray]] = {name: [] for name in opts.signals}
        self._raw_rows = 0
        self._last_flush = time.monotonic()
        self.loaded: dict[str, LoadedSignal] = {}
        self.attach_errors: dict[str, str] = {}
        self.steal_rides = False  # cpu_steal charged by runqueue's sched_switch program (_load)
        self.switched_off: set[str] = set()
        self.monitor: ResourceMonitor | None = None
        self.shedder = LoadShedder(opts.config["safety"]["max_overhead_pct"])
        self.overheads: list[float] = []
        self.accounting = Accounting(os.cpu_count() or 1)  # the manifest's `overhead`, exact
        self.bpf_totals: dict[str, tuple[int, int]] = {}  # signal -> (BPF run ns, runs), read at the end
        self.kernel_overheads: list[float] = []  # the probes' share: BPF run time + the loop's drain
        self.intake_overheads: list[float] = []  # span intake's share
        self._span_writes = CpuMeter()  # span parts written: an intake cost, on whichever thread
        self.tracectx: LoadedSignal | None = None
        self.tracectx_error: str | None = None
        self.receiver: OtlpReceiver | None = None
        self.otlp_error: str | None = None
        self._identity: dict | None = None  # the manifest's fixed part, made once
        self._samples: list = []  # resource samples since the last part (resources table)
        self.flattened: FlattenResult | None = None  # the spans made from otlp_raw when the recording ended
        self.flatten_error: str | None = None  # why they could not be: the run keeps its otlp_raw parts
        self._spans_lock = threading.Lock()  # the receiver's thread adds, the loop flushes
        self._raw_requests: list[RawRequest] = []  # taken since the last part (_hand_raw_requests)
        self._raw_request_bytes = 0
        self.anchor: ClockAnchor | None = None
        self._lock_fd: int | None = None  # the run's recording lock while recording
        self.otlp_exposed = _exposed_endpoints(opts.config["otlp"]) if opts.otlp else []
        self._part_seconds = opts.config["capture"]["part_max_seconds"]  # 1 s when space runs low
        self.low_space_since_ns: int | None = None
        self.lost_rows: dict[str, int] = {}  # rows a failed last flush could not write

    # -- setup ----------------------------------------------------------

    def _bpf_run_time(self) -> bool | str:
        """safety.bpf_run_time as this recording can do it: BCC's programs cannot count
        their runs, so "calibrate" leaves BPF time out there (method cpu_only)."""
        value = self.opts.config["safety"]["bpf_run_time"]
        return False if value == "calibrate" and self.mode == "bcc" else value

    def _settings(self, name: str) -> dict[str, int]:
        sampling = self.opts.config["sampling"]
        limit = sampling["events_per_second_limit"]
        return {**SIGNALS[name].settings(self.opts.config["capture"]),
                "rate_limit": limit, "rate_burst": sampling["burst_limit"] if limit else 0,
                "count_runs": int(self._bpf_run_time() == "calibrate")}

    def _overhead_manifest(self) -> dict:
        m = self.monitor
        return self.accounting.to_manifest(m.method if m else "cpu_only", self.bpf_totals,
                                           m.calibration.to_manifest() if m and m.calibration else None)

    def _load_tracectx(self) -> dict[str, int]:
        """The marker-library uprobe, whose per-thread map the stamped signals share."""
        if not any(SIGNALS[n].stamped for n in self.opts.signals):
            return {}
        try:
            self.tracectx = LoadedSignal(TRACECTX, ring_bytes=1 << 12, wakeup_bytes=1 << 12)
        except CaptureError as exc:
            self.tracectx_error = exc.message
            return {}
        return {"trace_slot_by_tid": self.tracectx.obj.map_fd("trace_slot_by_tid")}

    def _probe(self, name: str, shared: dict[str, int], **extra):
        args = dict(ring_bytes=self.ring_bytes, wakeup_bytes=self.wakeup_bytes,
                    settings=self._settings(name), libc=self.opts.libc)
        if self.mode == "bcc":
            from capture.bcc import BccSignal  # Debian's bcc only when asked for

            return BccSignal(SIGNALS[name], **args)
        maps = {**(shared if SIGNALS[name].stamped else {}), **extra.pop("maps", {})}
        return LoadedSignal(SIGNALS[name], **args, variant=self.opts.variant, shared_maps=maps,
                            cgroup_fd=self._cgroup_fd, **extra)

    def _load_signal(self, name: str, shared: dict[str, int]) -> None:
        """Loads and attaches one signal. With runqueue and cpu_steal both asked for,
        cpu_steal rides on runqueue's sched_switch program: its object is loaded first,
        not attached, and runqueue's program charges the steal into its maps
        (bpf/steal.bpf.h), so each context switch runs one program instead of two."""
        both = self.mode == "core" and {STEAL_RIDER, STEAL_HOST} <= set(self.opts.signals)
        if both and name == STEAL_RIDER:
            self.loaded[name] = self._probe(name, shared, attach=False)
            return
        if both and name == STEAL_HOST and STEAL_RIDER in self.loaded:
            rider = self.loaded[STEAL_RIDER]
            host = self._probe(name, shared, tune={"steal_on": 1},
                               maps={ours: rider.obj.map_fd(theirs) for ours, theirs in STEAL_MAPS.items()})
            self.loaded[name] = host
            self.steal_rides = True
            rider.hooks = [f"{h} (runqueue's program)" for h in host.hooks if h.endswith("/sched_switch")]
            return
        self.loaded[name] = self._probe(name, shared)

    def _steal_alone(self) -> None:
        """cpu_steal's own program from now on: runqueue did not load, or was switched off."""
        self.steal_rides = False
        rider = self.loaded[STEAL_RIDER]
        rider.hooks = []
        try:
            rider.attach_hooks()
        except CaptureError as exc:
            self.attach_errors[STEAL_RIDER] = exc.message
            self.loaded.pop(STEAL_RIDER).close()

    def _detach(self, name: str) -> None:
        """A signal switched off: its hooks go (its ring is still drained). If cpu_steal rode
        on runqueue, the one left goes on alone."""
        self.loaded[name].obj.detach()
        if not self.steal_rides:
            return
        if name == STEAL_RIDER:
            self.steal_rides = False
            self.loaded[STEAL_HOST].tune(steal_on=0)
        elif name == STEAL_HOST and STEAL_RIDER not in self.shedder.detached:
            self._steal_alone()

    def _load(self) -> None:
        self._cgroup_fd = None
        if self.opts.cgroup is not None:
            try:
                self._cgroup_fd = os.open(self.opts.cgroup, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise CaptureError(f"cannot open cgroup {self.opts.cgroup}: {exc.strerror}",
                                   "pass a cgroup-v2 directory, e.g. /sys/fs/cgroup/unified/<name>") from None
        shared = self._load_tracectx() if self.mode == "core" else {}
        for name in sorted(self.opts.signals, key=lambda n: n != STEAL_RIDER):  # the rider before its host
            try:
                self._load_signal(name, shared)
            except CaptureError as exc:
                self.attach_errors[name] = exc.message
        if STEAL_RIDER in self.loaded and not self.steal_rides and not self.loaded[STEAL_RIDER].hooks:
            self._steal_alone()
        if not self.loaded:
            first = next(iter(self.attach_errors.values()), "no signal requested")
            log = "BCC's" if self.mode == "bcc" else "libbpf's"
            raise CaptureError(f"no probe could be attached: {first}",
                               f"run 'slocap doctor' to see which hooks this kernel allows; -v shows {log} log")

    def _capability(self) -> dict:
        signals = {}
        for name, sig in SIGNALS.items():
            signals[name] = {
                "enabled": name in self.opts.signals,
                "attached": name in self.loaded,
                "hooks": self.loaded[name].hooks if name in self.loaded else sig.hook_names(),
                "error": self.attach_errors.get(name),
                "switched_off": name in self.switched_off,
            }
        full = all(s["attached"] for s in signals.values() if s["enabled"])
        stamping = {"enabled": self.tracectx is not None,
                    "hooks": self.tracectx.hooks if self.tracectx else [], "error": self.tracectx_error}
        mode = "bcc_degraded" if self.mode == "bcc" else "core_full" if full else "core_partial"
        return {"mode": mode, "missing": [n for n, s in signals.items() if not s["attached"]],
                "signals": signals,
                "trace_stamping": stamping}

    def _manifest(self, *, state: str, started_ns: int, ended_ns: int | None,
                  complete: bool, stop_reason: str | None, cpu_s: float) -> dict:
        o = self.opts
        events = sum(c.read for c in self.counts.values())
        if self._identity is None:  # fixed for the run; git and package metadata cost ~1 ms each
            self._identity = M.identity(run_id=self.run_id, tag=o.tag, scenario=o.scenario, seed=o.seed,
                                        profile=o.profile, phases=o.phases, config=o.config)
        return {
            **self._identity,
            "pods_file": str(o.pods_file) if o.pods_file else None,
            "cgroup_filter": str(o.cgroup) if o.cgroup else None,
            "capability": self._capability(),
            "clock": self.anchor.to_dict() if self.anchor else None,
            **M.timing(started_ns, ended_ns),
            "requested_duration_s": o.duration_s,
            "state": state, "complete": complete, "stop_reason": stop_reason,
            "counters": {name: c.to_dict() for name, c in self.counts.items()},
            "files": self.writers.files(),
            "lost_rows": self.lost_rows,
            "low_space_since": M.iso(self.low_space_since_ns) if self.low_space_since_ns else None,
            "otlp": {**self._otlp_manifest(), "exposed": self.otlp_exposed},
            "degraded": self.shedder.degraded,  # load was shed: safety.actions says what and when
            "safety": self._safety_manifest(started_ns, ended_ns),
            "overhead": self._overhead_manifest(),
            "recorder": {
                "cpu_s": round(cpu_s, 4),
                "cpu_us_per_event": round(cpu_s * 1e6 / events, 3) if events else None,
                "max_rss_kb": _peak_rss_kb(),
            },
        }

    # -- the loop -------------------------------------------------------

    def _drain(self) -> int:
        """Takes every ring's records as raw numpy batches: the hot path does no conversion."""
        total = 0
        for name, probe in self.loaded.items():
            records = probe.read()
            if len(records):
                self._raw[name].append(records)
                self.counts[name].read += len(records)
                total += len(records)
        self._raw_rows += total
        return total

    def _convert(self) -> None:
        """Raw batches → kernel_events rows, once per part: per-batch costs amortized."""
        assert self.anchor is not None
        for name, batches in self._raw.items():
            if not batches:
                continue
            records = np.concatenate(batches)
            n = len(records)
            columns = self.loaded[name].signal.to_columns(records)
            columns["ts_ns"] = records["ts_ns"].astype(np.int64) + self.anchor.offset_ns
            columns["signal"] = S.constant(name, n, pa.string())
            columns["node"] = S.constant(self.node, n, pa.string())
            columns.update(self.pods.columns(records["cgroup_id"]))
            self.writers["kernel_events"].add(S.kernel_events_table(columns, n))
            self._buffered[name] += n
            batches.clear()
        self._raw_rows = 0

    def _drain_hists(self, final: bool = False) -> None:
        """Moves finished slices (all of them when final) into kernel_hist. Called once per
        part: the slices wait in the BPF map meanwhile (bpf/hist.bpf.h holds 16,384 keys, a
        part's worth many times over), so the per-drain cost (table, pod columns) is paid
        once per part, not once per slice."""
        assert self.anchor is not None
        slice_ns = self.opts.config["capture"]["hist_slice_ms"] * 1_000_000
        current = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // slice_ns
        for name, probe in self.loaded.items():
            if probe.hist is None:
                continue
            keys, values = probe.hist.drain(None if final else current)
            if len(keys):
                table = hist_table(name, keys, values, slice_ns=slice_ns,
                                   offset_ns=self.anchor.offset_ns, node=self.node)
                # pod identity for the cgroup rows; pid and cpu rows have no cgroup
                cgroup_ids = table["cgroup_id"].fill_null(0).to_numpy()
                for col, arr in self.pods.columns(cgroup_ids).items():
                    table = table.set_column(table.schema.get_field_index(col), col, arr)
                self.writers["kernel_hist"].add(table)
                self.counts[name].hist_rows += len(table)

    def _watch_overhead(self) -> None:
        """One resource sample; a shedding step when the overhead stays too high.

        Called on the loop's thread: its CPU time is the probes' drain. The probes are shed
        only when their own cost (BPF run time + drain) is over the limit; otherwise span
        intake is throttled (capture/safety.py)."""
        assert self.monitor is not None
        events = sum(c.read for c in self.counts.values())
        work = {n: c.read + c.hist_rows for n, c in self.counts.items()}
        sample = self.monitor.sample(events, self.shedder.level, work=work, intake=self._intake_usage(),
                                     intake_level=self.shedder.intake_level)
        self.overheads.append(sample.overhead_pct)
        self.accounting.add(sample)
        self.kernel_overheads.append(sample.kernel_overhead_pct)
        self.intake_overheads.append(sample.intake_overhead_pct)
        self._samples.append(sample)  # a table per part, not per second: one row costs ~1 ms in Arrow
        active = {n: p for n, p in self.loaded.items() if n not in self.shedder.detached}
        throttle = self.receiver.throttle if self.receiver is not None else None
        action = self.shedder.observe(sample, active, throttle)
        if action and action["step"] == "switch_off":
            self.switched_off.add(action["signal"])
            if action["how"] == "detached":
                self._detach(action["signal"])

    def _intake_usage(self) -> IntakeUsage:
        loop_cpu_s = self._span_writes.cpu_s()  # on this thread: the receiver's own are in its counters
        if self.receiver is None:
            return IntakeUsage(loop_cpu_s=loop_cpu_s)
        c = self.receiver.counters
        return IntakeUsage(cpu_s=c.intake_cpu_s, loop_cpu_s=loop_cpu_s, spans_refused=c.spans_refused,
                           requests_refused=c.throttled)

    def _safety_manifest(self, started_ns: int, ended_ns: int | None) -> dict:
        """The manifest's `safety`: the overhead by cause, and what was shed and when."""
        def mean(xs: list[float]) -> float | None:
            return round(float(np.mean(xs)), 4) if xs else None

        def peak(xs: list[float]) -> float | None:
            return round(max(xs), 4) if xs else None

        def since_start(ns: int) -> float:
            return round((ns - started_ns) / 1e9, 3)

        end_ns = ended_ns or time.time_ns()
        switched_off = {}
        for name, off in self.shedder.switched_off.items():
            entry = {"switched_off_at_ns": off["ts_ns"], "t_s": since_start(off["ts_ns"]), "how": off["how"],
                     "off_s": round((end_ns - off["ts_ns"]) / 1e9, 3)}
            if "detached_ns" in off:  # from then on its hooks did not run: nothing left to count
                entry.update(detached_at_ns=off["detached_ns"], detached_t_s=since_start(off["detached_ns"]),
                             uncounted_s=round((end_ns - off["detached_ns"]) / 1e9, 3))
            entry["events_after"] = ("not counted after detached_at_ns" if "detached_ns" in off
                                     else "counted as sampled_out")
            switched_off[name] = entry
        throttle = self.receiver.throttle if self.receiver is not None else None
        return {
            "max_overhead_pct": self.opts.config["safety"]["max_overhead_pct"],
            "bpf_stats": bool(self.monitor and self.monitor.bpf_stats),
            "overhead_pct_mean": mean(self.overheads),
            "overhead_pct_max": peak(self.overheads),
            "kernel_overhead_pct_mean": mean(self.kernel_overheads),
            "kernel_overhead_pct_max": peak(self.kernel_overheads),
            "intake_overhead_pct_mean": mean(self.intake_overheads),
            "intake_overhead_pct_max": peak(self.intake_overheads),
            "cost_split": ("kernel: BPF run time + the main loop's CPU without span parts; intake: the OTLP "
                           "handler threads' CPU per request + span parts written; the rest (gRPC and HTTP "
                           "I/O threads) counts in the total only"),
            "actions": [{**a, "t_s": since_start(a["ts_ns"])} for a in self.shedder.actions],
            "actions_not_listed": self.shedder.actions_not_listed,
            "switched_off": switched_off,
            "intake": {"level": self.shedder.intake_level,
                       "admitted": throttle.fraction(self.shedder.intake_level) if throttle else None,
                       "throttled_s": round(self.shedder.intake_throttled_s, 3)},
        }

    def shedding(self) -> dict:
        """What `slocap record` says at the end: whether load was shed, each step with its
        time since the start, the signals switched off and the spans refused."""
        started_ns = getattr(self, "_started_ns", None) or time.time_ns()
        safety = self._safety_manifest(started_ns, time.time_ns())
        otlp = self._otlp_manifest()
        return {"degraded": self.shedder.degraded, "actions": safety["actions"],
                "actions_not_listed": safety["actions_not_listed"], "switched_off": safety["switched_off"],
                **{k: otlp.get(k, 0) for k in ("spans_refused", "requests_refused", "refused_requests_uncounted")}}

    def _start_otlp(self) -> None:
        """Spans beside the kernel events. A busy port is an error before anything is
        recorded, unless the spans were declared optional (--otlp-optional)."""
        if not self.opts.otlp:
            return
        cfg = self.opts.config["otlp"]

        def on_request(raw: RawRequest) -> None:
            """Kept as it came; flattened into spans when the recording ends (_flatten_spans).
            Rows are made at the next part (_hand_raw_requests), or sooner past the part
            writer's byte bound, so memory stays bounded however busy the exporters."""
            with self._spans_lock:
                self._raw_requests.append(raw)
                self._raw_request_bytes += len(raw.body)
                if self._raw_request_bytes >= MAX_BUFFER_BYTES:
                    self._hand_raw_requests()

        warm_intake()
        receiver = OtlpReceiver(cfg["endpoint"], cfg["grpc_endpoint"], cfg["max_request_bytes"], on_request)
        try:
            receiver.start()
        except SloError as exc:
            if not self.opts.otlp_optional:
                raise CaptureError(f"cannot receive spans: {exc.message}",
                                   "stop what holds the port, set otlp.endpoint / otlp.grpc_endpoint in a "
                                   "--config file, or pass --otlp-optional (record without spans if the port "
                                   "is taken) or --no-otlp") from None
            self.otlp_error = exc.message
            return
        self.receiver = receiver

    def _hand_raw_requests(self) -> None:
        """The requests taken since the last part, as otlp_raw rows to its writer; under _spans_lock."""
        if self._raw_requests:
            self.writers["otlp_raw"].add(raw_table(self._raw_requests))
            self._raw_requests = []
            self._raw_request_bytes = 0

    def _otlp_manifest(self) -> dict:
        cfg = self.opts.config["otlp"]
        out: dict = {"enabled": self.receiver is not None, "error": self.otlp_error,
                     "http_endpoint": cfg["endpoint"], "grpc_endpoint": cfg["grpc_endpoint"]}
        if self.receiver is not None:
            c = self.receiver.counters
            f = self.flattened
            final = f is not None and self.flatten_error is None
            out.update(requests_ok=c.requests_ok, rejected=dict(c.rejected), spans_received=c.spans_received,
                       # raw: the requests taken are kept as they came (otlp_raw), as while recording;
                       # final: flattened into spans and span_resources (capture/span_flatten.py)
                       spans_state="final" if final else "raw",
                       raw_requests_written=self.writers["otlp_raw"].rows_written,
                       spans_written=self.writers["spans"].rows_written,
                       # cut by otlp.attribute_count_limit / attribute_value_length_limit, when flattened
                       attributes_dropped=f.attributes_dropped if f else None,
                       values_truncated=f.values_truncated if f else None,
                       # after the recording, outside its overhead: CPU of reading, flattening, writing
                       flatten=f.to_manifest() if f else {"error": self.flatten_error} if self.flatten_error else None,
                       # refused with backpressure while span intake was shed (safety.actions)
                       requests_refused=c.throttled, spans_refused=c.spans_refused, bytes_refused=c.bytes_refused,
                       refused_requests_uncounted=c.throttled_uncounted,
                       refused_counting=("spans counted in refused protobuf requests (HTTP and gRPC); "
                                         "refused OTLP/JSON requests counted as requests and bytes only, in "
                                         "refused_requests_uncounted"),
                       intake_cpu_s=round(c.intake_cpu_s, 4),
                       # over every request handled: taken, refused as bad, or throttled
                       intake_us_per_request=round(c.intake_cpu_s * 1e6 / c.requests, 1) if c.requests else None)
        return out

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if self.anchor is not None:
            self._convert()
            self._drain_hists()
        if self._samples:
            self.writers["resources"].add(samples_table(self._samples))
            self._samples = []
        with self._spans_lock:  # the receiver's threads add requests
            self._hand_raw_requests()
            self.writers.flush("otlp_raw")
        self.writers.flush("resources", "kernel_hist", "kernel_events")
        for name, n in self._buffered.items():
            self.counts[name].written += n
            self._buffered[name] = 0
        if self._lock_fd is not None:  # the manifest follows every part: a killed recorder leaves it true
            self._write_manifest(state="recording", complete=False, stop_reason=None)

    def _flatten_spans(self) -> None:
        """The requests kept in otlp_raw become the spans and span_resources parts, now that
        the receiver has stopped and the last otlp_raw part is written; the otlp_raw parts
        go as their spans are written. Left for `slocap repair` when that fails."""
        try:
            self.flattened = flatten_raw(self.run_dir, self.writers["spans"], self.writers["span_resources"],
                                         AttributeLimits.from_config(self.opts.config["otlp"]))
        except Exception as exc:  # the recording is on disk: its manifest must still be written
            log.exception("flattening the OTLP requests of %s failed", self.run_dir)
            self.flatten_error = f"{type(exc).__name__}: {exc}"
        self.writers["otlp_raw"].parts[:] = [p.name for p in raw_parts(self.run_dir)]

    def _write_manifest(self, *, state: str, complete: bool, stop_reason: str | None,
                        ended_ns: int | None = None) -> None:
        M.write_manifest(self.run_dir, self._manifest(
            state=state, started_ns=self._started_ns, ended_ns=ended_ns, complete=complete,
            stop_reason=stop_reason, cpu_s=time.process_time() - self._cpu0))

    def _check_space(self) -> None:
        """Low free space: close parts every second, so a full disk loses about a second of rows."""
        low = shutil.disk_usage(self.run_dir).free < self.opts.config["capture"]["low_space_bytes"]
        if low and self.low_space_since_ns is None:
            self.low_space_since_ns = time.time_ns()
        self._part_seconds = 1.0 if low else self.opts.config["capture"]["part_max_seconds"]

    def _unwritten_rows(self) -> dict[str, int]:
        """Rows still in memory per table: what a failed last flush loses."""
        rows = {t: w.buffered_rows for t, w in self.writers.by_table.items()}
        rows["kernel_events"] += self._raw_rows
        rows["otlp_raw"] += len(self._raw_requests)
        rows["resources"] += len(self._samples)
        return {t: n for t, n in rows.items() if n}

    def _update_drops(self) -> None:
        for name, probe in self.loaded.items():
            self.counts[name].dropped = probe.dropped()
            self.counts[name].sampled_out = probe.sampled_out()

    def run(self, stop: Stop,
            on_progress: Callable[[Snapshot], None] | None = None,
            on_ready: Callable[[Path], None] | None = None) -> RecordResult:
        cap = self.opts.config["capture"]
        self.run_dir.mkdir(parents=True, exist_ok=False)
        self._lock_fd = M.hold_recording(self.run_dir)  # released by the kernel however we end
        self.writers = RunWriters(self.run_dir, max_rows=cap["part_max_rows"], max_seconds=cap["part_max_seconds"])
        # otlp_raw rows are made and written by the loop, or by a receiver thread when a part fills up
        # (inside the request it times): timed, so the loop's share counts as intake. The span
        # parts are written after the recording (_flatten_spans), outside its overhead
        self.writers["otlp_raw"].flush = self._span_writes.wrap(self.writers["otlp_raw"].flush)
        self._hand_raw_requests = self._span_writes.wrap(self._hand_raw_requests)
        self._cpu0 = time.process_time()
        self._started_ns = time.time_ns()
        stop_reason, complete, failure = "duration", True, None
        try:
            self._start_otlp()
        except CaptureError:  # nothing recorded yet: leave no run behind
            os.close(self._lock_fd)
            shutil.rmtree(self.run_dir)
            raise
        try:
            self._load()
            safety = self.opts.config["safety"]
            self.monitor = ResourceMonitor(self.loaded, self._bpf_run_time(), safety["calibrate_s"])
            self.anchor = take_anchor()
            self._write_manifest(state="recording", complete=False, stop_reason=None)
            if on_ready:
                on_ready(self.run_dir)
            self._loop(stop, on_progress)
            if stop.is_set():
                stop_reason, complete = stop.reason, stop.complete
        except OSError as exc:  # raised below, once _finish has said what was lost
            stop_reason, complete, failure = f"error: {exc}", False, exc
        except BaseException as exc:
            stop_reason, complete = f"error: {exc}", False
            raise
        finally:
            self._finish(complete, stop_reason)
        if failure is not None:
            hint = ("free space on that file system or pass another --out"
                    if failure.errno == errno.ENOSPC else "check the --out directory")
            lost = ", ".join(f"{t} {n:,}" for t, n in self.lost_rows.items()) or "none"
            raise CaptureError(f"recording into {self.run_dir} failed: {failure}; parts on disk are whole, "
                               f"rows not written: {lost}", hint)
        return RecordResult(self.run_dir, complete, stop_reason, self.counts,
                            self.writers["kernel_events"].bytes_written, self.attach_errors, self.otlp_error)

    def _loop(self, stop: Stop, on_progress) -> None:
        poller = select.epoll()
        for probe in self.loaded.values():
            poller.register(probe.ring_fd, select.EPOLLIN | select.EPOLLET)
        poller.register(stop.wake_fd, select.EPOLLIN)
        start = time.monotonic()
        deadline = start + self.opts.duration_s if self.opts.duration_s else float("inf")
        last_progress, last_counts = start, {n: 0 for n in self.counts}
        last_watch = start
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= deadline:
                    break
                # parts shorter than the poll timeout (part_max_seconds, or 1 s on low space)
                # close on time too
                part_due = self._last_flush + self._part_seconds - now
                poller.poll(max(0.0, min(self.poll_timeout_s, deadline - now, part_due)))
                self._drain()
                if time.monotonic() - last_watch >= 1.0:
                    last_watch = time.monotonic()
                    self._watch_overhead()
                    self._check_space()
                cap = self.opts.config["capture"]
                if (self._raw_rows >= cap["part_max_rows"]
                        or time.monotonic() - self._last_flush >= self._part_seconds
                        or any(w.buffered_rows >= w.max_rows for w in (self.writers["kernel_hist"], self.writers["spans"]))):
                    self._flush()
                now = time.monotonic()
                if on_progress and now - last_progress >= 0.5:
                    self._update_drops()
                    dt = now - last_progress
                    rates = {n: (c.read - last_counts[n]) / dt for n, c in self.counts.items()}
                    last_counts = {n: c.read for n, c in self.counts.items()}
                    last_progress = now
                    on_progress(Snapshot(now - start, self.counts, rates,
                                         self.writers["kernel_events"].bytes_written, len(self.writers["kernel_events"].parts)))
        finally:
            poller.close()

    def _finish(self, complete: bool, stop_reason: str) -> None:
        """Detach first so nothing new arrives, then drain, flush and finalize."""
        for probe in self.loaded.values():
            probe.obj.detach()
        if self.receiver is not None:
            self.receiver.stop()
        try:
            if self.anchor is not None:
                self._drain()
                self._drain_hists(final=True)
            self._update_drops()
            if self.monitor is not None:  # before the programs go
                self.bpf_totals = self.monitor.totals()
            self._flush()
        except OSError as exc:  # e.g. the disk filled up: keep what is on disk, say what was cut
            self.lost_rows = self._unwritten_rows()
            lost = ", ".join(f"{t} {n:,}" for t, n in self.lost_rows.items()) or "none"
            complete, stop_reason = False, f"{stop_reason}; last part not written: {exc}; rows lost: {lost}"
        finally:
            for probe in self.loaded.values():
                probe.close()
            if self.tracectx is not None:
                self.tracectx.close()
            if self.monitor is not None:
                self.monitor.close()
            if getattr(self, "_cgroup_fd", None) is not None:
                os.close(self._cgroup_fd)
        self._flatten_spans()
        lock_fd, self._lock_fd = self._lock_fd, None
        try:
            self._write_manifest(state="finished", complete=complete, stop_reason=stop_reason,
                                 ended_ns=time.time_ns())
        except OSError:
            pass  # the last manifest still says "recording": with the lock gone, sloan shows the run cut
        finally:
            os.close(lock_fd)
