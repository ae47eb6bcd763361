"""Over its overhead limit, the recorder sheds what costs: a span flood is refused with
OTLP backpressure while the probes keep recording, and the run says it was degraded."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.flood import FLOOD, WORKLOAD  # the span flood and the connect workload of bench/flood.py

SLOCAP = str(Path(sys.executable).parent / "slocap")
UNPACED = "1e9"  # exports/s: as fast as the client can


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.kernel
def test_a_span_flood_is_refused_with_backpressure_and_no_probe_is_touched(tmp_path):
    """A span flood over the overhead limit: intake refused with 429, every connect still recorded, run degraded."""
    out, http_port = tmp_path / "runs", _free_port()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "otlp": {"endpoint": f"127.0.0.1:{http_port}", "grpc_endpoint": f"127.0.0.1:{_free_port()}"},
        "safety": {"max_overhead_pct": 2},  # 2 % of the machine; the flood alone takes far more
    }))
    recorder = subprocess.Popen([SLOCAP, "record", "--out", str(out), "--config", str(cfg), "--signals", "connect",
                                 "--duration", "16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not list(out.glob("tag=*/scenario=*/run=*/manifest.json")):  # written once the probes are attached
            assert recorder.poll() is None, f"recorder exited early: {recorder.stderr.read()}"
            assert time.monotonic() < deadline, "recorder did not start within 30 s"
            time.sleep(0.05)
        connector = subprocess.Popen([sys.executable, "-c", WORKLOAD, "200", "10"], stdout=subprocess.PIPE, text=True)
        flooder = subprocess.Popen([sys.executable, "-c", FLOOD, str(http_port), UNPACED, "11"],
                                   stdout=subprocess.PIPE, text=True)
        pid = int(connector.stdout.readline())
        made = int(connector.communicate(timeout=30)[0].split()[0])
        flood = json.loads(flooder.communicate(timeout=30)[0])
        stdout, stderr = recorder.communicate(timeout=60)
    finally:
        recorder.kill()
    assert recorder.returncode == 0, stderr
    (run_dir,) = out.glob("tag=*/scenario=*/run=*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    actions = manifest["safety"]["actions"]

    # the flood was refused with backpressure the exporters understand
    assert flood["statuses"].get("429", 0) > 0, flood
    assert flood["retry_after"], flood
    assert manifest["otlp"]["requests_refused"] == flood["statuses"]["429"]
    assert manifest["otlp"]["spans_refused"] == 100 * flood["statuses"]["429"]
    assert manifest["otlp"]["spans_received"] == 100 * flood["statuses"]["200"]

    # intake was shed, the probes never: every step was for intake cost
    assert actions and actions[0]["step"] == "throttle_intake", actions
    assert all(a["cause"] == "intake" for a in actions), actions
    assert actions[0]["intake_overhead_pct"] > actions[0]["kernel_overhead_pct"]
    assert manifest["safety"]["switched_off"] == {}
    assert not manifest["capability"]["signals"]["connect"]["switched_off"]

    # every connect is a row, or counted as left out in the kernel
    events = pq.read_table(run_dir / "kernel_events").to_pylist()
    rows = sum(1 for e in events if e["signal"] == "connect" and e["pid"] == pid)
    counted = manifest["counters"]["connect"]
    assert made > 1000
    assert rows + counted["sampled_out"] + counted["dropped"] >= made
    assert rows == made, f"{made} connects made, {rows} recorded: {counted}"

    # the run says it was degraded, and how
    assert manifest["degraded"] is True
    assert "run degraded:" in stdout and "run complete" not in stdout, stdout
    assert "span intake:" in stdout and "refused with backpressure" in stdout, stdout
    assert "0 dropped, 0 sampled out" in stdout, stdout
    res = pq.read_table(run_dir / "resources").to_pylist()
    assert sum(r["spans_refused"] for r in res) == manifest["otlp"]["spans_refused"]
    assert max(r["intake_level"] for r in res) >= 1
