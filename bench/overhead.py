#!/usr/bin/env python3
"""Overhead benchmark: what `slocap record` with every signal costs the machine,
as a paired ratio with and without the recorder (docs/architecture.md, "Statistics rules").

Design. A fixed amount of work runs once WITH a tool attached and once WITHOUT,
per pair, in a seeded random order; the pairs of all experiments are shuffled
together so drift hits them alike. The reference workload (--workload):
  lab        (default) the incident lab's baseline: gateway, retrieval, backend
             and DNS server in their namespaces and pod cgroups, set up once,
             and per run the seeded load generator rag_mixed_20rps (seed 42)
             for --seconds; the recorder runs as the lab runs it (pods file,
             cgroup filter, OTLP receiver taking the services' spans)
  synthetic  bench/workload.py: a fixed number of DNS lookups, TCP connects,
             TLS handshakes and context switches on loopback, in a network
             namespace made here: a stress case, far busier than the lab
Experiments in one run:
  slocap   the recorder with all 7 signals (started before the workload, ready
           when its manifest.json exists, stopped with SIGINT after it)
  runqlat  the peer: libbpf-tools' runqlat, in the same place
  A/A      both arms without any tool: the control, whose CI95 should hold 0

Measured per run, over the workload's window only:
  machine CPU  delta of system-wide busy time in /proc/stat (all CPUs, all but
               idle + iowait): in-kernel BPF cost, the tool's own CPU, the lot
  own CPU      user + sys of the workload's process tree (wait4; with the lab,
               plus the lab's cgroup cpu.stat) plus the tool's CPU in the
               window (/proc/PID/stat): blind to other tenants of the
               machine, blind to BPF run in their context
  wall         workload start to exit
Per pair: ratio with/without. Printed: median ratio - 1 as overhead %, with a
CI95 from a seeded bootstrap over pairs (10,000 resamples).

Usage: .venv/bin/python bench/overhead.py [--workload lab|synthetic] [--pairs 20]
       [--aa-pairs N] [--seed 42] [--seconds 20 | --ops 16000] [--quick]
       [--install-peer] [--json FILE]
Needs root (loads BPF programs, makes network namespaces and cgroups).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from analyze.stats import bootstrap_median_ci  # noqa: E402
from runfmt.errors import SloError  # noqa: E402
from runfmt.signals import SIGNAL_NAMES  # noqa: E402

WORKLOAD = ROOT / "bench" / "workload.py"
ALL_SIGNALS = ",".join(SIGNAL_NAMES)
PEER_PACKAGE = "libbpf-tools"
GATES_PCT = {"dev": 5.0, "GA": 3.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics (pure) --------------------------------------------------------

def paired_ratios(with_: Sequence[float], without: Sequence[float]) -> np.ndarray:
    """Per-pair ratio with/without; both sequences in pair order."""
    a = np.asarray(with_, dtype=float)
    b = np.asarray(without, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two equal-length 1-d sequences, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(b > 0) and np.all(a >= 0)):
        raise ValueError("paired samples must be finite, 'with' >= 0 and 'without' > 0")
    return a / b


@dataclass(frozen=True)
class Summary:
    """Overhead of one metric in one experiment, in percent (median ratio - 1)."""
    n: int
    median_pct: float
    low_pct: float
    high_pct: float

    @property
    def contains_zero(self) -> bool:
        return self.low_pct <= 0.0 <= self.high_pct


def summarize(with_: Sequence[float], without: Sequence[float], *, resamples: int = 10_000,
              seed: int = 42) -> Summary:
    ratios = paired_ratios(with_, without)
    median, low, high = bootstrap_median_ci(ratios, resamples=resamples, seed=seed)
    if low is None:  # one pair: no interval
        low = high = float("nan")
    return Summary(len(ratios), (median - 1) * 100, (low - 1) * 100, (high - 1) * 100)


def gate_verdict(s: Summary, limit_pct: float) -> str:
    """pass when the whole CI95 is at or below the limit, fail when all above it."""
    if s.n < 10:
        return "exploratory (< 10 pairs): no verdict"
    if s.high_pct <= limit_pct:
        return "pass"
    if s.low_pct > limit_pct:
        return "fail"
    return "undecided (CI95 straddles it)"


def schedule(pairs: dict[str, int], seed: int) -> list[tuple[str, int, tuple[str, str]]]:
    """Every pair of every experiment once, shuffled together; each pair's two
    arms ("with", "without") in a random order. Deterministic for a seed."""
    rng = random.Random(seed)
    todo = [(name, i) for name, n in pairs.items() for i in range(n)]
    rng.shuffle(todo)
    out = []
    for name, i in todo:
        arms = ("with", "without") if rng.random() < 0.5 else ("without", "with")
        out.append((name, i, arms))
    return out


# -- machine readings ---------------------------------------------------------

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times() -> dict[str, int]:
    """System-wide CPU ticks from /proc/stat's first line (guest time is already in
    user, so it is not added again), busy = all but idle + iowait; and the
    machine's context-switch count."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    ticks = dict(zip(CPU_FIELDS, map(int, lines[0].split()[1:9])))
    ticks["busy"] = sum(ticks.values()) - ticks["idle"] - ticks["iowait"]
    ticks["ctxt"] = next(int(ln.split()[1]) for ln in lines if ln.startswith("ctxt "))
    return ticks


def process_cpu_ticks(pid: int) -> int:
    """utime + stime of a whole process (all threads), in ticks; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(rest[11]) + int(rest[12])


def bpf_program_names() -> list[str] | None:
    """Names of the BPF programs loaded now (bpftool), None without bpftool. Taken
    while no tool of ours runs, they are other tenants' probes, which would cost
    the workload in both arms alike."""
    exe = shutil.which("bpftool") or ("/usr/sbin/bpftool" if os.access("/usr/sbin/bpftool", os.X_OK) else None)
    if not exe:
        return None
    done = subprocess.run([exe, "prog", "show", "-j"], capture_output=True, text=True)
    try:
        return sorted(str(prog.get("name", "?")) for prog in json.loads(done.stdout or "[]"))
    except ValueError:
        return None


# -- processes we start, and their cleanup -----------------------------------

class Children:
    """Every process started here, each in its own session; killed on the way out."""

    def __init__(self) -> None:
        self.live: dict[int, subprocess.Popen] = {}
        self.gentle: set[int] = set()  # tools: SIGINT first, so they detach their probes

    def start(self, cmd: list[str], gentle: bool = False, **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.live[p.pid] = p
        if gentle:
            self.gentle.add(p.pid)
        return p

    def forget(self, p: subprocess.Popen) -> None:
        self.live.pop(p.pid, None)
        self.gentle.discard(p.pid)

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60.0) -> int | None:
        """Signal, wait, then SIGKILL its process group if it is still there."""
        if p.returncode is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(p)
                p.wait()
        self.forget(p)
        return p.returncode

    @staticmethod
    def _kill_group(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_all(self) -> None:
        for p in list(self.live.values()):
            if p.pid not in self.gentle:
                self._kill_group(p)  # the workload and its server: no need to be polite
            elif p.returncode is None:
                try:
                    os.kill(p.pid, signal.SIGINT)  # a tool gets a chance to detach cleanly
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in list(self.live.values()):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._kill_group(p)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.forget(p)


class Netns:
    """A network namespace of ours with lo up and a resolver at 127.0.0.1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name
        self._made_etc_netns = False
        self.created = False

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.created = True
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True)
        self._made_etc_netns = not self.etc.parent.exists()
        self.etc.mkdir(parents=True, exist_ok=False)
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:2 timeout:1\n")

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def remove(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False
        shutil.rmtree(self.etc, ignore_errors=True)
        if self._made_etc_netns:
            try:
                self.etc.parent.rmdir()
            except OSError:
                pass


# -- tools under test ---------------------------------------------------------

class Slocap:
    label = "slocap record, 7 signals"

    def __init__(self, children: Children, exe: str, scratch: Path, extra: Sequence[str] = ()) -> None:
        self.children, self.exe, self.scratch = children, exe, scratch
        self.extra = list(extra)  # e.g. the lab's pods file, cgroup filter and OTLP config
        self.proc: subprocess.Popen | None = None
        self.out: Path | None = None

    def start(self) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="rec-", dir=self.scratch))
        self.log = open(self.out / "slocap.log", "w")
        self.proc = self.children.start([self.exe, "record", "--out", str(self.out / "runs"),
                                         "--signals", ALL_SIGNALS, *self.extra], gentle=True,
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        pattern = str(self.out / "runs" / "tag=*" / "scenario=*" / "run=*" / "manifest.json")
        deadline = time.monotonic() + 60
        while not glob.glob(pattern):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.children.stop(self.proc, signal.SIGKILL, timeout=5)
                raise RuntimeError(f"slocap record did not become ready: {self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        self.log.flush()
        text = (self.out / "slocap.log").read_text(errors="replace").strip()
        return text[-1500:] or "(no output)"

    def stop(self) -> dict:
        rc = self.children.stop(self.proc, signal.SIGINT, timeout=60)
        self.log.close()
        found = glob.glob(str(self.out / "runs" / "tag=*" / "scenario=*" / "run=*" / "manifest.json"))
        m = json.loads(Path(found[0]).read_text()) if found else {}
        counters = m.get("counters", {})
        info = {
            "exit_code": rc,
            "state": m.get("state"),
            "mode": (m.get("capability") or {}).get("mode"),
            "events_seen": sum(c.get("seen", 0) for c in counters.values()),
            "events_written": sum(c.get("written", 0) for c in counters.values()),
            "dropped": sum(c.get("dropped", 0) for c in counters.values()),
            "sampled_out": sum(c.get("sampled_out", 0) for c in counters.values()),
            "seen_by_signal": {k: c.get("seen", 0) for k, c in counters.items()},
            "overhead_pct_mean": (m.get("safety") or {}).get("overhead_pct_mean"),
            "shedding_actions": (m.get("safety") or {}).get("actions", []),
            "recorder_cpu_s": (m.get("recorder") or {}).get("cpu_s"),
        }
        if rc not in (0, None) and m.get("state") != "finished":
            raise RuntimeError(f"slocap record exited {rc}: {self._log_tail()}")
        shutil.rmtree(self.out, ignore_errors=True)
        return info


class Runqlat:
    label = "runqlat (libbpf-tools)"

    def __init__(self, children: Children, exe: str, scratch: Path) -> None:
        self.children, self.exe, self.scratch = children, exe, scratch
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        fd, name = tempfile.mkstemp(prefix="runqlat-", suffix=".log", dir=self.scratch)
        os.close(fd)
        self.logpath = Path(name)
        self.log = open(self.logpath, "w")
        # line-buffered so its "Tracing ..." line (printed once attached) shows at once
        self.proc = self.children.start(["stdbuf", "-oL", self.exe, "1", "1000"], gentle=True,
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "Tracing" not in self.logpath.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.children.stop(self.proc, signal.SIGKILL, timeout=5)
                raise RuntimeError(f"runqlat did not start: {self.logpath.read_text(errors='replace')[-1500:]}")
            time.sleep(0.02)

    def stop(self) -> dict:
        rc = self.children.stop(self.proc, signal.SIGINT, timeout=30)
        self.log.close()
        self.logpath.unlink(missing_ok=True)
        return {"exit_code": rc}


def find_runqlat() -> str | None:
    for cand in (shutil.which("runqlat"), "/usr/sbin/runqlat", "/usr/bin/runqlat"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def apt_policy(package: str) -> tuple[str | None, str | None]:
    """(installed, candidate) versions from apt-cache policy; None for '(none)'/unknown."""
    done = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key in ("Installed", "Candidate"):
            found[key] = None if value.strip() in ("(none)", "") else value.strip()
    return found.get("Installed"), found.get("Candidate")


def ensure_peer(install: bool, say) -> tuple[str | None, str]:
    """(path to runqlat or None, one line saying how it stands)."""
    exe = find_runqlat()
    installed, candidate = apt_policy(PEER_PACKAGE)
    if exe:
        return exe, f"{exe} ({PEER_PACKAGE} {installed or 'version unknown'})"
    if candidate is None and install:
        say("apt-get update (to look for libbpf-tools)")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        installed, candidate = apt_policy(PEER_PACKAGE)
    if candidate is None:
        return None, (f"{PEER_PACKAGE} is not available from this host's Debian sources "
                      f"({platform.freedesktop_os_release().get('PRETTY_NAME', 'Debian')}): peer skipped")
    if not install:
        return None, (f"runqlat missing: {PEER_PACKAGE} {candidate} is available but not installed; "
                      "pass --install-peer to install it: peer skipped")
    say(f"installing {PEER_PACKAGE} {candidate} (--install-peer)")
    done = subprocess.run(["apt-get", "install", "-y", "-qq", PEER_PACKAGE], capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    exe = find_runqlat()
    if done.returncode != 0 or exe is None:
        return None, f"installing {PEER_PACKAGE} {candidate} failed: {done.stderr.strip()[-300:]}: peer skipped"
    return exe, f"{exe} ({PEER_PACKAGE} {candidate}, installed now by --install-peer)"


# -- one run of the workload --------------------------------------------------

def cgroup_cpu_s(cgroup: Path | None) -> float:
    """usage_usec of a cgroup-v2 directory (all its processes, every thread), in s."""
    if cgroup is None:
        return 0.0
    for line in (cgroup / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    raise RuntimeError(f"{cgroup}/cpu.stat has no usage_usec")


def run_workload(children: Children, cmd: list[str], tool_pid: int | None, cgroup: Path | None = None) -> dict:
    """One run of `cmd` (its last stdout line is JSON); CPU over its window. With
    `cgroup`, the CPU of the long-running services in it counts as workload too."""
    tool0 = process_cpu_ticks(tool_pid) if tool_pid else 0
    svc0 = cgroup_cpu_s(cgroup)
    cpu0, t0 = cpu_times(), time.monotonic()
    with tempfile.TemporaryFile() as err_file:
        p = children.start(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_file)
        try:
            out = p.stdout.read()  # to EOF; the child stays unreaped for wait4 (not communicate(), which reaps)
            p.stdout.close()
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:  # Ctrl-C: the workload goes first, before the tool detaches
            children.kill_all()
            raise
        err_file.seek(0)
        err = err_file.read()
    t1 = time.monotonic()
    cpu1 = cpu_times()
    svc1 = cgroup_cpu_s(cgroup)
    tool1 = process_cpu_ticks(tool_pid) if tool_pid else 0
    p.returncode = os.waitstatus_to_exitcode(status)
    children.forget(p)
    if p.returncode != 0:
        raise RuntimeError(f"workload exited {p.returncode}: {err.decode(errors='replace').strip()[-1500:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if "by_status" in result:  # replay.loadgen --json: requests, not operations
        failed = {k: v for k, v in result["by_status"].items() if k != "ok"}
        result = {"ops_wall_s": None, "failures": sum(failed.values()),
                  "first_failure": ", ".join(f"{v} {k}" for k, v in failed.items()) or None}
    workload_cpu = ru.ru_utime + ru.ru_stime + (svc1 - svc0)
    tool_cpu = (tool1 - tool0) / CLK_TCK
    return {
        "machine_cpu_s": (cpu1["busy"] - cpu0["busy"]) / CLK_TCK,
        "steal_s": (cpu1["steal"] - cpu0["steal"]) / CLK_TCK,
        "machine_cpu_by_field_s": {k: (cpu1[k] - cpu0[k]) / CLK_TCK for k in CPU_FIELDS},
        "context_switches": cpu1["ctxt"] - cpu0["ctxt"],
        "workload_cpu_s": round(workload_cpu, 4),
        "workload_user_s": round(ru.ru_utime, 4),
        "workload_sys_s": round(ru.ru_stime, 4),
        "services_cpu_s": round(svc1 - svc0, 4),
        "tool_cpu_s": tool_cpu,
        "own_cpu_s": round(workload_cpu + tool_cpu, 4),
        "wall_s": round(t1 - t0, 4),
        "ops_wall_s": result["ops_wall_s"],
        "failures": result["failures"],
        "first_failure": result["first_failure"],
    }


# -- the benchmark ------------------------------------------------------------

METRICS = (("machine_cpu_s", "machine CPU"), ("own_cpu_s", "workload+tool CPU"), ("wall_s", "wall"))


def say(msg: str) -> None:
    print(f"[overhead {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--pairs", type=int, help="pairs per tool (default 20; 3 with --quick)")
    ap.add_argument("--aa-pairs", type=int, help="A/A control pairs (default: = --pairs)")
    ap.add_argument("--seed", type=int, default=42, help="order of runs, bootstrap, workload plan (default 42)")
    ap.add_argument("--workload", choices=("lab", "synthetic"), default="lab",
                    help="lab: the incident lab's baseline at 20 requests/s (default); "
                         "synthetic: bench/workload.py, a connect/DNS/context-switch stress case")
    ap.add_argument("--seconds", type=float, help="lab: load per run, seconds (default 20; 8 with --quick)")
    ap.add_argument("--lab-index", type=int, default=9, help="lab: which lab network to make (default 9)")
    ap.add_argument("--ops", type=int, help="synthetic: operations per run (default 16000, ~4-5 s here; "
                                            "6000 with --quick)")
    ap.add_argument("--threads", type=int, default=8, help="synthetic: client threads (default 8)")
    ap.add_argument("--dns", choices=("stub", "hosts"), default="stub",
                    help="stub: real DNS queries to a responder on loopback in our netns (default); "
                         "hosts: /etc/hosts lookups, no netns")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds of quiet before each run (default 0.5)")
    ap.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    ap.add_argument("--quick", action="store_true", help="smoke: 3 pairs each, shorter runs")
    ap.add_argument("--no-peer", action="store_true", help="skip the runqlat peer")
    ap.add_argument("--install-peer", action="store_true",
                    help=f"apt-get install {PEER_PACKAGE} when runqlat is missing")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write per-run, per-pair data and summaries")
    a = ap.parse_args(argv)
    a.pairs = a.pairs if a.pairs is not None else (3 if a.quick else 20)
    a.aa_pairs = a.aa_pairs if a.aa_pairs is not None else a.pairs
    a.ops = a.ops if a.ops is not None else (6000 if a.quick else 16000)
    a.seconds = a.seconds if a.seconds is not None else (8.0 if a.quick else 20.0)
    if a.pairs < 1 or a.aa_pairs < 0 or a.ops < 1 or a.seconds <= 0:
        ap.error("--pairs must be >= 1, --aa-pairs >= 0, --ops >= 1, --seconds > 0")
    return a


def _fmt(s: Summary) -> str:
    if np.isnan(s.low_pct):
        return f"{s.median_pct:+6.2f} [   n/a,    n/a]"
    return f"{s.median_pct:+6.2f} [{s.low_pct:+6.2f}, {s.high_pct:+6.2f}]"


def _workload_size(a: argparse.Namespace) -> str:
    return f"{a.seconds:g} s of rag_mixed_20rps" if a.workload == "lab" else f"{a.ops:,} ops"


def _synthetic_workload(a: argparse.Namespace, scratch: Path) -> list[str]:
    from bench.workload import make_cert

    cert_dir = scratch / "cert"
    cert_dir.mkdir()
    make_cert(cert_dir)
    prefix: list[str] = []
    if a.dns == "stub":
        a._netns = Netns(f"slobench-{os.getpid()}")  # removed by main()'s cleanup
        a._netns.create()
        prefix = a._netns.prefix()
    return prefix + [sys.executable, str(WORKLOAD), "--ops", str(a.ops), "--threads", str(a.threads),
                     "--seed", str(a.seed), "--dns", a.dns, "--cert-dir", str(cert_dir)]


def _lab_workload(a: argparse.Namespace, scratch: Path) -> tuple[list[str], list[str], Path]:
    """The lab up once (torn down by main()); per run, the load generator alone.
    Returns the load command, the recorder's lab arguments and the lab's cgroup."""
    from replay.runner import record_config, start_services
    from replay.topology import Topology
    from runfmt.config import load_config

    say(f"setting up lab {a.lab_index} (namespaces, pod cgroups, services)")
    a._lab = Topology(a.lab_index)
    a._lab.__enter__()
    cfg = load_config(None)
    url = start_services(a._lab, a.seed, cfg)
    config = record_config(cfg, a._lab.host_ip, scratch / "record.json")
    cmd = [sys.executable, "-m", "replay.loadgen", "--url", url, "--profile", "rag_mixed_20rps",
           "--seconds", f"{a.seconds:g}", "--seed", str(a.seed), "--json"]
    recorder_args = ["--config", str(config), "--pods", str(a._lab.pods_file),
                     "--cgroup", str(a._lab.cgroup_root)]
    return cmd, recorder_args, a._lab.cgroup_root


def benchmark(a: argparse.Namespace, children: Children, scratch: Path) -> dict:
    slocap_exe = str(Path(sys.executable).parent / "slocap")
    if not os.access(slocap_exe, os.X_OK):
        slocap_exe = shutil.which("slocap") or ""
    if not slocap_exe:
        raise RuntimeError("slocap not found next to this Python nor on PATH: run `make setup` and use .venv/bin/python")

    peer_exe, peer_note = (None, "peer skipped (--no-peer)") if a.no_peer else ensure_peer(a.install_peer, say)
    say(f"peer: {peer_note}")

    cgroup: Path | None = None
    if a.workload == "lab":
        cmd, recorder_args, cgroup = _lab_workload(a, scratch)
    else:
        cmd, recorder_args = _synthetic_workload(a, scratch), []

    tools = {"slocap": Slocap(children, slocap_exe, scratch, recorder_args)}
    if peer_exe:
        tools["runqlat"] = Runqlat(children, peer_exe, scratch)
    pairs = {name: a.pairs for name in tools}
    if a.aa_pairs:
        pairs["A/A"] = a.aa_pairs

    baseline_programs = bpf_program_names()  # other tenants' probes, there in every run alike

    def wait_for_detach(timeout_s: float = 10.0) -> None:
        """A stopped tool's programs are freed some time after it exits: wait, so its
        hooks do not run in the next run's window."""
        deadline = time.monotonic() + timeout_s
        while baseline_programs is not None and time.monotonic() < deadline:
            now = bpf_program_names()
            if now is None or len(now) <= len(baseline_programs):
                return
            time.sleep(0.1)

    def one_run(experiment: str, arm: str) -> dict:
        tool = tools.get(experiment) if arm == "with" else None
        info = None
        wait_for_detach()
        foreign = bpf_program_names()
        if tool:
            tool.start()
        try:
            time.sleep(a.settle)
            m = run_workload(children, cmd, tool.proc.pid if tool else None, cgroup)
        finally:
            if tool:
                info = tool.stop()
        m["tool_attached"] = tool is not None  # A/A: "with" is just the first label, no tool either way
        m["foreign_bpf_programs"] = foreign
        if not tool:
            m["tool_cpu_s"] = None
        if info is not None:
            m["tool"] = info
        if m["failures"]:
            say(f"warning: {m['failures']} workload operations failed, first: {m['first_failure']}")
        return m

    say(f"warm-up: workload alone, then with each tool ({_workload_size(a)} per run)")
    one_run("A/A", "without")
    for name in list(tools):
        try:
            one_run(name, "with")
        except RuntimeError as exc:
            if name == "slocap":
                raise
            peer_note = f"{peer_note}; it failed in the warm-up, peer skipped: {exc}"
            say(f"peer: {peer_note}")
            del tools[name]
            del pairs[name]

    order = schedule(pairs, a.seed)
    total = 2 * len(order)
    load0 = os.getloadavg()
    started = time.monotonic()
    runs: list[dict] = []
    done = 0
    for experiment, i, arms in order:
        for arm in arms:
            done += 1
            m = one_run(experiment, arm)
            m.update(experiment=experiment, pair=i, arm=arm, position=done)
            runs.append(m)
            shown = arm if experiment != "A/A" else {"with": "A1", "without": "A2"}[arm]
            say(f"[{done}/{total}] {experiment} pair {i} {shown:7s}: machine CPU {m['machine_cpu_s']:.2f} s, "
                f"own CPU {m['own_cpu_s']:.2f} s, wall {m['wall_s']:.2f} s")
    elapsed = time.monotonic() - started
    load1 = os.getloadavg()

    per_pair: list[dict] = []
    summaries: dict[str, dict[str, Summary]] = {}
    for experiment in pairs:
        by_pair = {}
        for r in runs:
            if r["experiment"] == experiment:
                by_pair.setdefault(r["pair"], {})[r["arm"]] = r
        ids = sorted(by_pair)
        summaries[experiment] = {}
        for key, _ in METRICS:
            w = [by_pair[i]["with"][key] for i in ids]
            wo = [by_pair[i]["without"][key] for i in ids]
            summaries[experiment][key] = summarize(w, wo, resamples=a.resamples, seed=a.seed)
        for i in ids:
            row = {"experiment": experiment, "pair": i,
                   "first": "with" if by_pair[i]["with"]["position"] < by_pair[i]["without"]["position"] else "without"}
            for key, _ in METRICS:
                row[f"{key}_ratio"] = by_pair[i]["with"][key] / by_pair[i]["without"][key]
            per_pair.append(row)

    return {"args": a, "peer_note": peer_note, "pairs": pairs, "runs": runs, "per_pair": per_pair,
            "summaries": summaries, "elapsed_s": elapsed, "load": (load0, load1), "tools": tools}


def render(res: dict) -> str:
    a, runs, summaries = res["args"], res["runs"], res["summaries"]
    labels = {"slocap": "slocap (7 signals)", "runqlat": "runqlat (peer)", "A/A": "A/A control"}
    base = [r for r in runs if r["arm"] == "without"]
    rec = [r["tool"] for r in runs if r["experiment"] == "slocap" and r["arm"] == "with"]
    lines = [
        f"overhead = median over pairs of (with / without) - 1, in %, [CI95 bootstrap, "
        f"{a.resamples:,} resamples, seed {a.seed}]",
        (f"workload: the lab's baseline, rag_mixed_20rps seed {a.seed} for {a.seconds:g} s per run "
         f"(gateway, retrieval, backend over TLS, DNS server; services' CPU from the lab cgroup); "
         f"runs in random order" if a.workload == "lab" else
         f"workload: bench/workload.py, {a.ops:,} ops x {a.threads} threads, 1 in 10 TLS, "
         f"DNS {'to a stub on loopback in a netns' if a.dns == 'stub' else 'from /etc/hosts'}; "
         f"runs in random order"),
        "",
        f"{'experiment':<20}{'pairs':>5}  " + "".join(f"{label:<26}" for _, label in METRICS),
    ]
    for experiment, by_metric in summaries.items():
        n = next(iter(by_metric.values())).n
        lines.append(f"{labels.get(experiment, experiment):<20}{n:>5}  "
                     + "".join(f"{_fmt(by_metric[key]):<26}" for key, _ in METRICS))
    lines.append("")
    med = lambda key, rs: float(np.median([r[key] for r in rs]))  # noqa: E731
    lines.append(f"without any tool (median of {len(base)} runs): machine CPU {med('machine_cpu_s', base):.2f} s, "
                 f"workload CPU {med('workload_cpu_s', base):.2f} s, wall {med('wall_s', base):.2f} s, "
                 f"steal {med('steal_s', base):.2f} s, "
                 f"{float(np.median([r['context_switches'] / r['wall_s'] for r in base])):,.0f} context switches/s")
    if rec:
        ev = float(np.median([t["events_seen"] for t in rec]))
        tool_cpu = [r["tool_cpu_s"] for r in runs if r["experiment"] == "slocap" and r["arm"] == "with"]
        est = [t["overhead_pct_mean"] for t in rec if t["overhead_pct_mean"] is not None]
        dropped = sum(t["dropped"] for t in rec)
        steps = [act.get("step", "?") for t in rec for act in t["shedding_actions"]]
        shed = f"{len(steps)} load-shedding actions" + (
            f" ({', '.join(f'{k} x{steps.count(k)}' for k in sorted(set(steps)))}, in "
            f"{sum(1 for t in rec if t['shedding_actions'])} of {len(rec)} runs)" if steps else "")
        modes = sorted({str(t["mode"]) for t in rec})
        lines.append(f"slocap per run (median of {len(rec)}): {ev:,.0f} events seen, recorder CPU in the window "
                     f"{float(np.median(tool_cpu)):.2f} s, recorder.cpu_s (whole run) "
                     f"{float(np.median([t['recorder_cpu_s'] for t in rec])):.2f} s; "
                     f"own estimate safety.overhead_pct_mean "
                     + (f"{float(np.median(est)):.2f} %" if est else "n/a"))
        lines.append(f"slocap in all runs: {dropped} events dropped, {shed}, mode {', '.join(modes)}")
    ncpu = os.cpu_count() or 1
    busy = med("machine_cpu_s", [{"machine_cpu_s": r["machine_cpu_s"] / (ncpu * r["wall_s"])} for r in base])
    others = med("machine_cpu_s", [{"machine_cpu_s": r["machine_cpu_s"] - r["workload_cpu_s"]} for r in base])
    lines.append(f"machine without any tool: {busy:.0%} of {ncpu} CPUs busy in the window; "
                 f"{others:.2f} s of it not the workload's (other processes, kernel threads)")
    if busy > 0.9:
        lines.append("WARNING: the machine was saturated: other tenants fill the idle time a tool's cost would use, "
                     "so the machine-CPU ratio tracks wall time; workload+tool CPU is the steadier figure here")
    s = summaries.get("slocap", {}).get("machine_cpu_s")
    if s:
        lines.append("gates on the machine-CPU ratio (CI95 must lie below): "
                     + "; ".join(f"{g} <= {lim:g} %: {gate_verdict(s, lim)}" for g, lim in GATES_PCT.items())
                     + (" (the lab's baseline profile)" if a.workload == "lab"
                        else " (synthetic stress workload, not the lab's baseline profile)"))
    aa = summaries.get("A/A")
    if aa and next(iter(aa.values())).n < 2:
        lines.append("A/A control: one pair, no CI95")
    elif aa:
        bad = [label for key, label in METRICS if not aa[key].contains_zero]
        lines.append("A/A control: CI95 holds 0 for every metric, as it should" if not bad else
                     f"A/A control: CI95 EXCLUDES 0 for {', '.join(bad)}: the machine drifted or is shared; "
                     "read the figures above with that noise in mind")
    else:
        lines.append("A/A control: not run (--aa-pairs 0)")
    foreign = [r["foreign_bpf_programs"] for r in runs if r.get("foreign_bpf_programs") is not None]
    if foreign:
        counts = [len(f) for f in foreign]
        names = sorted({n for f in foreign for n in f})
        lines.append(f"BPF programs of other processes loaded before a run: in {sum(c > 0 for c in counts)} of "
                     f"{len(counts)} runs, up to {max(counts)}"
                     + (f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else ""))
    lines.append(f"peer: {res['peer_note']}")
    fails = sum(r["failures"] for r in runs)
    if fails:
        lines.append(f"workload: {fails} operations failed in all runs (see --json)")
    l0, l1 = res["load"]
    lines.append(f"measured now on {platform.node()} ({platform.release()}), "
                 f"{2 * sum(res['pairs'].values())} runs in {res['elapsed_s'] / 60:.1f} min; "
                 f"load average 1 min {l0[0]:.2f} at start, {l1[0]:.2f} at end")
    if min(res["pairs"].values()) < 10:
        lines.append("exploratory: fewer than 10 pairs; no distribution claim, no gate")
    return "\n".join(lines)


def to_json(res: dict) -> dict:
    a = res["args"]
    return {
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "settings": {"workload": a.workload, "seconds": a.seconds if a.workload == "lab" else None,
                     "pairs": a.pairs, "aa_pairs": a.aa_pairs, "seed": a.seed, "ops": a.ops,
                     "threads": a.threads, "dns": a.dns, "settle_s": a.settle, "resamples": a.resamples,
                     "signals": ALL_SIGNALS, "quick": a.quick},
        "peer": res["peer_note"],
        "elapsed_s": round(res["elapsed_s"], 1),
        "loadavg_start_end": res["load"],
        "summaries_pct": {e: {k: asdict(s) | {"contains_zero": s.contains_zero} for k, s in by.items()}
                          for e, by in res["summaries"].items()},
        "pairs": res["per_pair"],
        "runs": res["runs"],
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if os.geteuid() != 0:
        print("overhead: needs root (loads BPF programs and makes a network namespace); "
              "run it as root: sudo .venv/bin/python bench/overhead.py", file=sys.stderr)
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    children = Children()
    scratch = Path(tempfile.mkdtemp(prefix="slobench-"))
    a._netns = None
    a._lab = None
    code = 0
    try:
        res = benchmark(a, children, scratch)
        print(render(res), flush=True)
        if a.json:
            a.json.write_text(json.dumps(to_json(res), indent=1, default=str) + "\n")
            say(f"wrote {a.json}")
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        code = 130
    except (RuntimeError, SloError, subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", None)
        print(f"overhead: {exc}" + (f"\n{detail.decode(errors='replace') if isinstance(detail, bytes) else detail}"
                                    if detail else ""), file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.kill_all()
        if a._netns is not None:
            a._netns.remove()
        if a._lab is not None:
            a._lab.__exit__(None, None, None)
        shutil.rmtree(scratch, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return code


if __name__ == "__main__":
    sys.exit(main())
