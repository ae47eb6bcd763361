"""Direct overhead accounting: the manifest's `overhead` is counted by the kernel (the
recorder's CPU time and its programs' BPF run time), and `sloan gate` judges it: a run
with the default settings passes, a run made expensive on purpose fails."""

from __future__ import annotations

import json
import os
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


def _ping_pong(seconds: float) -> None:
    """Two processes bouncing a byte through pipes: a context switch storm."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        while os.read(r1, 1) == b"x":
            os.write(w2, b"x")
        os._exit(0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        os.write(w1, b"x")
        os.read(r2, 1)
    os.write(w1, b"q")
    os.waitpid(pid, 0)
    for fd in (r1, w1, r2, w2):
        os.close(fd)


def _overhead_check(out: Path, candidate: str, base: str) -> dict:
    done = subprocess.run([str(BIN / "sloan"), "gate", "--runs", str(out), "--base", base, "--candidate", candidate,
                           "--allow-exploratory", "--json", "-"], capture_output=True, text=True, timeout=300)
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
    expensive = _record(out, "expensive", 6, {"capture": {"runqueue_min_delay_ns": 0},
                                              "safety": {"max_overhead_pct": 100}},
                        "--signals", "runqueue", during=lambda: _ping_pong(4))
    assert expensive["overhead"]["pct"] > 5, expensive["overhead"]

    assert _overhead_check(out, candidate="defaults", base="expensive")["status"] == "pass"
    assert _overhead_check(out, candidate="expensive", base="defaults")["status"] == "fail"
