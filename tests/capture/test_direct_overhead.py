"""Direct overhead accounting: the manifest's `overhead` is counted by the kernel (the
recorder's CPU time and its programs' BPF run time), and `sloan gate` judges it: a run
with the default settings passes, a run made expensive on purpose fails."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runfmt.signals import SIGNAL_NAMES

BIN = Path(sys.executable).parent


def _record(out: Path, tag: str, seconds: float, config: dict, *args: str, during=None) -> dict:
    cfg = out.parent / f"{tag}.json"
    cfg.write_text(json.dumps({"otlp": {"endpoint": "127.0.0.1:0", "grpc_endpoint": "127.0.0.1:0"}, **config}))
    proc = subprocess.Popen([str(BIN / "slocap"), "record", "--out", str(out), "--tag", tag, "--config", str(cfg),
                             "--duration", str(seconds), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(f"tag={tag}/scenario=*/run=*/manifest.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.1)
    if during is not None:
        during()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    (run_dir,) = out.glob(f"tag={tag}/scenario=*/run=*")
    return json.loads((run_dir / "manifest.json").read_text())


PING_PONG = """
import os, sys, time
r1, w1 = os.pipe(); r2, w2 = os.pipe()
if os.fork() == 0:
    while os.read(r1, 1) == b"x":
        os.write(w2, b"x")
    os._exit(0)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    os.write(w1, b"x"); os.read(r2, 1)
os.write(w1, b"q"); os.wait()
"""


def _ping_pong(seconds: float) -> None:
    """Two processes bouncing a byte through pipes: a context switch storm."""
    subprocess.run([sys.executable, "-c", PING_PONG, str(seconds)], check=True, timeout=seconds + 30)


def _overhead_check(out: Path, candidate: str, base: str, limit_pct: float) -> dict:
    cfg = out.parent / "gate.json"
    cfg.write_text(json.dumps({"safety": {"max_overhead_pct": limit_pct}}))
    done = subprocess.run([str(BIN / "sloan"), "gate", "--runs", str(out), "--base", base, "--candidate", candidate,
                           "--allow-exploratory", "--config", str(cfg), "--json", "-"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1, 2), done.stderr
    doc = json.loads(done.stdout)
    return next(c for c in doc["checks"] if c["name"] == "recorder overhead")


@pytest.mark.kernel
def test_direct_accounting_and_the_gate_on_a_default_and_an_expensive_run(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()

    def lookups() -> None:
        end = time.monotonic() + 4
        while time.monotonic() < end:
            socket.getaddrinfo("localhost", 80)
            time.sleep(0.01)

    default = _record(out, "defaults", 6, {}, during=lookups)
    o = default["overhead"]
    assert o["method"] == "direct" and o["bpf_stats"] is True
    assert set(o["per_signal"]) == set(SIGNAL_NAMES)  # every signal on by default
    assert o["per_signal"]["dns"]["bpf_runs"] > 0 and o["per_signal"]["runqueue"]["bpf_runs"] > 0
    assert o["bpf_run_s"] > 0 and o["recorder_cpu_s"] > 0
    assert o["pct"] == pytest.approx(100 * (o["recorder_cpu_s"] + o["bpf_run_s"]) / (o["wall_s"] * o["cpus"]),
                                     abs=0.01)
    assert o["windows"] >= 4 and o["window_median_pct"] is not None

    # every context switch an event, and no shedding to rescue it: expensive on purpose
    expensive = _record(out, "expensive", 8, {"capture": {"runqueue_min_delay_ns": 0, "part_max_seconds": 0.1,
                                                          "hist_slice_ms": 100, "poll_timeout_ms": 10},
                                              "safety": {"max_overhead_pct": 100}},
                        "--signals", "runqueue", during=lambda: _ping_pong(6))
    cheap, dear = o["window_median_pct"], expensive["overhead"]["window_median_pct"]
    assert dear > 2 * cheap, (cheap, expensive["overhead"])

    # a limit between the two: the gate passes the default run and fails the expensive one
    limit = (cheap + dear) / 2
    assert _overhead_check(out, candidate="defaults", base="expensive", limit_pct=limit)["status"] == "pass"
    assert _overhead_check(out, candidate="expensive", base="defaults", limit_pct=limit)["status"] == "fail"


def _stats_sysctl() -> str:
    return Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()


@pytest.mark.kernel
def test_calibrated_accounting_counts_runs_after_the_stats_go_off(tmp_path):
    if _stats_sysctl() != "0":
        pytest.fail("kernel.bpf_stats_enabled is 1 on this host: calibration is not used then; set it to 0")
    out = tmp_path / "runs"
    out.mkdir()
    seen = {}

    def switches_then_look() -> None:
        _ping_pong(3)  # the calibration window (2 s) passes meanwhile
        seen["stats"] = _stats_sysctl()  # ours went off with the calibration
        _ping_pong(2)

    m = _record(out, "calibrated", 7, {"safety": {"bpf_run_time": "calibrate", "calibrate_s": 2}},
                "--signals", "runqueue,dns", during=switches_then_look)
    o = m["overhead"]
    assert seen["stats"] == "0"
    assert o["method"] == "calibrated" and o["bpf_stats"] is False
    cal = o["calibration"]
    assert cal["done"] and cal["seconds"] == 2
    ns = cal["ns_per_run"]["runqueue"]
    assert ns is not None and 10 < ns < 100_000
    rq = o["per_signal"]["runqueue"]
    # the runs after calibration were counted by the programs and priced at its ns per run
    assert rq["bpf_runs"] > 0 and rq["bpf_run_s"] > 0
    assert rq["bpf_ns_per_run"] == pytest.approx(ns, rel=0.2)
    assert o["pct"] == pytest.approx(100 * (o["recorder_cpu_s"] + o["bpf_run_s"]) / (o["wall_s"] * o["cpus"]),
                                     abs=0.01)
    # the gate judges a calibrated figure as it does a direct one
    _record(out, "direct", 3, {}, "--signals", "runqueue,dns")
    assert _overhead_check(out, candidate="calibrated", base="direct", limit_pct=100)["status"] == "pass"


def _jited_bytes(obj, program: str) -> int:
    fd = obj.program_fds()[program]
    info = dict(line.split(":\t", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                if ":\t" in line)
    shown = subprocess.run(["bpftool", "prog", "show", "id", info["prog_id"].strip(), "--json"],
                           capture_output=True, text=True, check=True)
    return json.loads(shown.stdout)["bytes_jited"]


@pytest.mark.kernel
def test_run_counting_is_pruned_by_the_verifier_when_off(tmp_path):
    from capture.bpfobj import BpfObject
    from capture.signals import SIGNALS

    sizes = {}
    for on in (0, 1):
        with BpfObject(SIGNALS["runqueue"].object_path) as obj:
            for prog in obj.programs():
                obj.set_autoload(prog, not prog.endswith("_raw"))
            obj.set_rodata(count_runs=on)
            obj.load()
            sizes[on] = _jited_bytes(obj, "sched_switch")
    assert sizes[0] < sizes[1], sizes  # off: the counter's code is gone, not skipped at run time
