"""slocap lab run: the incident lab end to end, one labelled run directory per rep.

For each rep: lay out the lab (namespaces on a bridge, kubelet-named cgroups),
start the recorder (kernel probes + OTLP receiver on the bridge address), start
the services (DNS, retrieval, backend over TLS, gateway), send the seeded load
through the phases baseline → fault → recovery, inject the fault at the start
of the fault phase and clear it at its end, then write labels.parquet with the
fault windows as they really happened.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from replay import certs, faults
from replay.loadgen import Summary, run_load
from replay.profiles import PROFILES, schedule_phases
from replay.topology import Topology
from runfmt.signals import SIGNAL_NAMES
from runfmt.errors import CaptureError, ConfigError
from runfmt.runs import new_run_id, run_dir_for
from runfmt.manifest import write_manifest
from runfmt.schema import LABELS

LOAD_PROFILE = "rag_mixed_20rps"
# phases in seconds: `full` the canonical lengths (docs/architecture.md), `smoke` short enough for CI
PHASES = {
    "full": (("baseline", 600.0), ("fault", 600.0), ("recovery", 300.0)),
    "smoke": (("baseline", 15.0), ("fault", 15.0), ("recovery", 10.0)),
}
BASELINE = "baseline"  # a run with no fault
PORTS = {"dns": 53, "dns_admin": 8053, "retrieval": 8081, "backend": 8443, "gateway": 8080}

def scenario_names() -> list[str]:
    return [BASELINE, *faults.SCENARIOS, *faults.MIXED]


@dataclass
class LabOptions:
    scenarios: list[str]
    reps: int
    tag: str
    profile: str  # smoke | full
    runs_root: Path
    config: dict
    seed: int = 42
    lab_index: int = 0
    signals: tuple[str, ...] = SIGNAL_NAMES
    # {scenario: {parameter: value}}: config lab.faults, then --fault (slocap lab run)
    fault_params: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in scenario_names()]
        if unknown:
            raise ConfigError(f"unknown scenario {unknown[0]!r}",
                              f"known scenarios: all, {', '.join(scenario_names())}")
        if self.profile not in PHASES:
            raise ConfigError(f"unknown profile {self.profile!r}", f"choose {' or '.join(PHASES)}")
        lab_faults = (self.config.get("lab") or {}).get("faults") or {}
        merged = {s: {**lab_faults.get(s, {}), **self.fault_params.get(s, {})}
                  for s in {*lab_faults, *self.fault_params}}
        self.fault_params = faults.check_fault_params(merged)


@dataclass
class LabProgress:
    """What the runner reports while it works."""
    scenario: str
    rep: int
    reps: int
    phase: str
    requests_done: int = 0
    requests_total: int = 0


@dataclass
class LabRun:
    scenario: str
    rep: int
    run_dir: Path
    complete: bool
    summary: Summary
    labels: list[dict] = field(default_factory=list)


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def start_services(lab: Topology, seed: int, cfg: dict) -> str:
    """Starts the four services, exporting spans to the recorder's OTLP/HTTP port of
    config `cfg`; returns the gateway's URL."""
    otlp = f"http://{lab.host_ip}:{_port(cfg['otlp']['endpoint'])}/v1/traces"
    common = ["--seed", str(seed), "--otlp-endpoint", otlp]
    cert, key = certs.make_self_signed(lab.workdir / "tls")
    zone = lab.workdir / "zone.json"
    zone.write_text(json.dumps(lab.zone()))
    a = lab.addr
    lab.start("dns", _python("replay.dnsserver", "--listen", f"{a('dns')}:{PORTS['dns']}",
                             "--admin", f"{a('dns')}:{PORTS['dns_admin']}", "--zone", str(zone), *common))
    lab.start("retrieval", _python("replay.retrieval", "--listen", f"{a('retrieval')}:{PORTS['retrieval']}",
                                   *common))
    lab.start("backend", _python("replay.backend", "--listen", f"{a('backend')}:{PORTS['backend']}",
                                 "--cert", str(cert), "--key", str(key),
                                 "--weights-file", str(lab.workdir / "backend-weights.bin"), *common))
    lab.start("gateway", _python("replay.gateway", "--listen", f"{a('gateway')}:{PORTS['gateway']}",
                                 "--retrieval-url", f"http://retrieval.lab:{PORTS['retrieval']}",
                                 "--backend-url", f"https://backend.lab:{PORTS['backend']}",
                                 "--backend-ca", str(cert), *common))
    return f"http://{a('gateway')}:{PORTS['gateway']}"


class _FaultClock(threading.Thread):
    """Injects at the start of the fault phase and clears at its end, on time."""

    def __init__(self, injector: faults.Injector | None, t0: float, start_s: float, end_s: float,
                 on_phase: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.injector, self.t0, self.start_s, self.end_s = injector, t0, start_s, end_s
        self.on_phase = on_phase
        self.window: tuple[int, int] | None = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()

    def run(self) -> None:
        try:
            if self._cancel.wait(max(0.0, self.t0 + self.start_s - time.monotonic())):
                return
            self.on_phase("fault")
            # the window is conservative: from before inject() to after clear()
            started = time.time_ns()
            if self.injector is not None:
                self.injector.inject()
            self._cancel.wait(max(0.0, self.t0 + self.end_s - time.monotonic()))
            if self.injector is not None:
                self.injector.clear()
            self.window = (started, time.time_ns())
            self.on_phase("recovery")
        except BaseException as exc:  # surfaced by the runner after the load
            self.error = exc

    def cancel(self) -> None:
        self._cancel.set()


def record_config(cfg: dict, host_ip: str, path: Path) -> Path:
    cfg = copy.deepcopy(cfg)
    # the services live in other namespaces: the receiver listens on the bridge
    cfg["otlp"]["endpoint"] = f"{host_ip}:{_port(cfg['otlp']['endpoint'])}"
    cfg["otlp"]["grpc_endpoint"] = f"{host_ip}:{_port(cfg['otlp']['grpc_endpoint'])}"
    path.write_text(json.dumps(cfg))
    return path


def _interrupt_when_parent_dies() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


class _Recorder:
    """`slocap record` in its own process, as an SRE runs it: its CPU is its own."""

    def __init__(self, opts: LabOptions, scenario: str, lab: Topology, phases) -> None:
        self.run_id = new_run_id()
        self.run_dir = run_dir_for(opts.runs_root, opts.tag, scenario, self.run_id)
        argv = [str(Path(sys.executable).parent / "slocap"), "record", "--out", str(opts.runs_root),
                "--tag", opts.tag, "--scenario", scenario, "--run-id", self.run_id,
                "--signals", ",".join(opts.signals), "--mode", "core",
                "--config", str(record_config(opts.config, lab.host_ip, lab.workdir / "record.json")),
                "--pods", str(lab.pods_file), "--cgroup", str(lab.cgroup_root),
                "--seed", str(opts.seed), "--profile", opts.profile,
                "--phases", ",".join(f"{name}={secs:g}" for name, secs in phases)]
        self.log = lab.workdir / "slocap.log"
        with open(self.log, "wb") as log:
            # its own session: the terminal's Ctrl-C reaches the runner, which stops it in order;
            # if the runner is killed outright, the kernel sends it SIGINT (a cut run, finalized)
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_interrupt_when_parent_dies)
        deadline = time.monotonic() + 60
        while not (self.run_dir / "manifest.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise CaptureError(f"slocap record did not start: {self.log.read_text()[-2000:]}",
                                   "run 'slocap doctor'")
            time.sleep(0.05)

    def stop(self, finished: bool) -> dict:
        """SIGUSR1 ends it as planned, SIGINT as cut short; returns its manifest."""
        self.proc.send_signal(signal.SIGUSR1 if finished else signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return json.loads((self.run_dir / "manifest.json").read_text())


def run_one(opts: LabOptions, scenario: str, rep: int,
            on_progress: Callable[[LabProgress], None] | None = None) -> LabRun:
    """One rep. Ctrl-C (KeyboardInterrupt) unwinds it: fault cleared, the recorder
    stopped with complete: false, the lab torn down."""
    phases = PHASES[opts.profile]
    progress = LabProgress(scenario, rep, opts.reps, "setup")

    def report(**changes) -> None:
        for k, v in changes.items():
            setattr(progress, k, v)
        if on_progress:
            on_progress(progress)

    report()
    with Topology(opts.lab_index) as lab:
        recorder = _Recorder(opts, scenario, lab, phases)
        try:
            url = start_services(lab, opts.seed, opts.config)
            injector = (faults.build(scenario, lab, faults.params_for(scenario, opts.fault_params))
                        if scenario != BASELINE else None)
            planned = schedule_phases(PROFILES[LOAD_PROFILE], opts.seed, list(phases))
            baseline_s = phases[0][1]
            clock = _FaultClock(injector, time.monotonic(), baseline_s, baseline_s + phases[1][1],
                                lambda phase: report(phase=phase))
            report(phase="baseline", requests_total=len(planned))
            clock.start()
            try:
                summary = run_load(url, planned, out_dir=recorder.run_dir, timeout_s=60.0,
                                   on_progress=lambda done, total: report(requests_done=done))
            finally:
                clock.cancel()
                clock.join(30)
                if injector is not None:
                    injector.clear()  # idempotent: also after Ctrl-C mid-fault
            if clock.error:
                raise clock.error
            labels = _write_labels(recorder.run_dir, recorder.run_id, scenario, injector, clock.window)
        except BaseException:
            recorder.stop(finished=False)
            raise
        manifest = recorder.stop(finished=True)
        if injector is not None:
            # the recorder wrote the manifest; the lab adds what it injected, and how hard
            manifest["fault"] = {"scenario": scenario, "labels": [dict(label) for label in injector.labels()]}
            write_manifest(recorder.run_dir, manifest)
    return LabRun(scenario, rep, recorder.run_dir, bool(manifest.get("complete")), summary, labels)


def _write_labels(run_dir: Path, run_id: str, scenario: str, injector: faults.Injector | None,
                  window: tuple[int, int] | None) -> list[dict]:
    rows = []
    if injector is not None and window is not None:
        rows = [{"run_id": run_id, "scenario": scenario, "domain": label["domain"], "target": label.get("target"),
                 "intensity": label.get("intensity"), "start_ns": window[0], "end_ns": window[1]}
                for label in injector.labels()]
    pq.write_table(pa.Table.from_pylist(rows, schema=LABELS), run_dir / "labels.parquet")
    return rows


def run_lab(opts: LabOptions, on_progress: Callable[[LabProgress], None] | None = None) -> list[LabRun]:
    return [run_one(opts, scenario, rep, on_progress)
            for scenario in opts.scenarios for rep in range(1, opts.reps + 1)]


def _orphan_recorder_pids() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"record" in argv and any(a.startswith(b"/sys/fs/cgroup/unified/slo-lab-") for a in argv):
            pids.append(int(cmdline.parent.name))
    return pids


def stop_orphan_recorders(grace_s: float = 30.0) -> list[str]:
    """Stops `slocap record` processes of a lab whose runner was killed (they record
    the lab's cgroup, which cleanup removes): SIGINT, so each finalizes its run as
    cut; SIGKILL for any still there after `grace_s` (its finished parts stay valid)."""
    pids = _orphan_recorder_pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    stopped = []
    for pid in pids:
        how = "stopped"
        if Path(f"/proc/{pid}").exists():
            try:
                os.kill(pid, signal.SIGKILL)
                how = f"killed after {grace_s:g} s"
            except ProcessLookupError:
                pass
        stopped.append(f"slocap record (pid {pid}) {how}")
    return stopped
