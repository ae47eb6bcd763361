"""A lab run cut by Ctrl-C, and one killed outright: nothing of the lab stays."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_scenarios import _lab_leftovers

pytestmark = pytest.mark.kernel
SLOCAP = str(Path(sys.executable).parent / "slocap")


def _start(tmp_path: Path, index: int) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "runs"
    # started with SIGINT ignored, as a background job of a script is: Ctrl-C must still work.
    # The child inherits the ignored SIGINT from here. No preexec_fn: with one, Python forks
    # this process (gRPC loaded by earlier tests) instead of spawning, and gRPC's fork
    # handler restarting its poller in the child could abort it before exec (epoll EBADF).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen([SLOCAP, "lab", "run", "--scenario", "dns_latency", "--tag", "ci", "--profile",
                                 "smoke", "--out", str(out), "--lab-index", str(index)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 60
    while not list(out.glob("tag=ci/scenario=dns_latency/run=*/requests")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the lab did not start sending load"
        time.sleep(0.2)
    time.sleep(2)
    return proc, out


def test_ctrl_c_mid_run_cleans_the_lab_and_marks_the_run_cut(tmp_path):
    proc, out = _start(tmp_path, 94)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert "interrupted" in stderr
    manifest = json.loads(next(out.glob("tag=ci/scenario=dns_latency/run=*/manifest.json")).read_text())
    assert manifest["complete"] is False
    assert _lab_leftovers() == []


def test_a_killed_run_leaves_what_cleanup_removes(tmp_path):
    proc, _ = _start(tmp_path, 95)
    proc.kill()
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()
    # the services ran in sessions of their own: kill what is left in the lab's cgroups too
    assert _lab_leftovers(), "a killed run should leave its namespaces behind"
    done = subprocess.run([SLOCAP, "lab", "cleanup"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _lab_leftovers() == []
    assert _recorders_of_lab(95) == [], "cleanup must stop the killed run's recorder"


def _recorders_of_lab(index: int) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if f"/sys/fs/cgroup/unified/slo-lab-{index}".encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids
