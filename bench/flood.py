#!/usr/bin/env python3
"""Span flood during an incident: does the kernel evidence survive it?

`slocap record` with its defaults (every signal, safety.max_overhead_pct) while
a paced OTLP/HTTP flood (--spans-per-s, exports of 100 spans from 4 clients
that ignore backpressure) and a workload of loopback connects and DNS lookups
(--connects-per-s each) run for --seconds. Printed: what the flood sent and
how it was answered, every connect and lookup of the workload against the rows
in kernel_events (or counted as dropped or sampled out), the shedding steps
with their cause, and whether the run says degraded.

    sudo .venv/bin/python bench/flood.py                 # 6,000 spans/s + 200 connects/s, 30 s
    sudo .venv/bin/python bench/flood.py --seconds 10 --json flood.json

Exit code 0 when every connect and lookup is accounted for, spans were refused
before any probe was touched, and the run is marked degraded exactly when
something was shed; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

BIN = Path(sys.executable).parent

# paced OTLP/HTTP exports of 100 spans (argv: port, exports/s, seconds), ignoring backpressure;
# prints {"statuses": {status: count}, "retry_after": [values seen]}
FLOOD = """
import http.client, json, sys, time
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
attrs = [KeyValue(key=f"gen_ai.attr{i}", value=AnyValue(string_value="x" * 24)) for i in range(8)]
spans = [Span(trace_id=bytes(range(16)), span_id=(i + 1).to_bytes(8, "big"), name="chat", attributes=attrs,
              start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_000_001_000)
         for i in range(100)]
body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
statuses, retry_after, sent = {}, set(), 0
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
start = time.monotonic()
while time.monotonic() < start + seconds:
    conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
    r = conn.getresponse(); r.read()
    statuses[r.status] = statuses.get(r.status, 0) + 1
    if r.getheader("Retry-After"):
        retry_after.add(r.getheader("Retry-After"))
    sent += 1
    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
print(json.dumps({"statuses": statuses, "retry_after": sorted(retry_after)}), flush=True)
"""

# paced loopback connects and getaddrinfo lookups; prints its pid, then both counts
WORKLOAD = """
import os, socket, sys, threading, time
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(512)
port = server.getsockname()[1]
def accept():
    while True:
        c, _ = server.accept(); c.close()
threading.Thread(target=accept, daemon=True).start()
print(os.getpid(), flush=True)
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
made = looked = 0
start = time.monotonic()
while time.monotonic() < start + seconds:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        made += 1
    socket.getaddrinfo("localhost", port)
    looked += 2  # create_connection resolves its address through getaddrinfo too
    time.sleep(max(0.0, start + made / rate - time.monotonic()))
print(made, looked, flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(a: argparse.Namespace, scratch: Path) -> dict:
    out, http_port = scratch / "runs", _free_port()
    cfg = scratch / "config.json"
    cfg.write_text(json.dumps({"otlp": {"endpoint": f"127.0.0.1:{http_port}",
                                        "grpc_endpoint": f"127.0.0.1:{_free_port()}"}}))
    recorder = subprocess.Popen([str(BIN / "slocap"), "record", "--out", str(out), "--config", str(cfg),
                                 "--duration", str(a.seconds + 6)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("tag=*/scenario=*/run=*/manifest.json")):
            if recorder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the recorder did not start: {recorder.stderr.read()}")
            time.sleep(0.05)
        workload = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(a.connects_per_s), str(a.seconds)],
                                    stdout=subprocess.PIPE, text=True)
        per_client = a.spans_per_s / 100 / a.clients
        flooders = [subprocess.Popen([sys.executable, "-c", FLOOD, str(http_port), str(per_client), str(a.seconds)],
                                     stdout=subprocess.PIPE, text=True) for _ in range(a.clients)]
        pid = int(workload.stdout.readline())
        made, looked = map(int, workload.communicate(timeout=a.seconds + 60)[0].split())
        statuses: dict[str, int] = {}
        for f in flooders:
            for status, n in json.loads(f.communicate(timeout=a.seconds + 60)[0])["statuses"].items():
                statuses[status] = statuses.get(status, 0) + n
        stdout, stderr = recorder.communicate(timeout=a.seconds + 120)
    finally:
        recorder.kill()
    if recorder.returncode != 0:
        raise RuntimeError(f"slocap record failed: {stderr}")
    (run_dir,) = out.glob("tag=*/scenario=*/run=*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    events = pq.read_table(run_dir / "kernel_events", columns=["signal", "pid"]).to_pylist()
    rows = {s: sum(1 for e in events if e["signal"] == s and e["pid"] == pid) for s in ("connect", "dns")}
    return {"made": {"connect": made, "dns": looked}, "rows": rows, "statuses": statuses,
            "counters": manifest["counters"], "otlp": manifest["otlp"], "safety": manifest["safety"],
            "degraded": manifest.get("degraded"), "overhead": manifest.get("overhead"),
            "final_lines": stdout.strip().splitlines()[:4]}


def verdict(r: dict) -> list[str]:
    """What did not hold; empty when everything did."""
    problems = []
    for signal in ("connect", "dns"):
        c = r["counters"][signal]
        if r["rows"][signal] + c["sampled_out"] + c["dropped"] < r["made"][signal]:
            problems.append(f"{signal}: {r['made'][signal]} made, {r['rows'][signal]} recorded, "
                            f"{c['sampled_out']} sampled out, {c['dropped']} dropped: some are counted nowhere")
    actions = r["safety"]["actions"]
    causes = [a.get("cause") for a in actions]
    if "kernel" in causes and "intake" not in causes[:causes.index("kernel")]:
        problems.append("a probe was shed before span intake was")
    shed = bool(actions)
    if bool(r["degraded"]) != shed:
        problems.append(f"degraded is {r['degraded']} but {len(actions)} shedding step(s) were taken")
    return problems


def render(r: dict, a: argparse.Namespace) -> str:
    o, s = r["otlp"], r["safety"]
    lines = [f"flood: {a.spans_per_s:,.0f} spans/s offered by {a.clients} clients for {a.seconds:g} s; answers "
             + ", ".join(f"HTTP {k} x{v:,}" for k, v in sorted(r["statuses"].items())),
             f"spans received {o.get('spans_received', 0):,}, refused with backpressure "
             f"{o.get('spans_refused', 0):,} in {o.get('requests_refused', 0):,} requests"]
    for signal in ("connect", "dns"):
        c = r["counters"][signal]
        lines.append(f"{signal}: {r['made'][signal]:,} made by the workload, {r['rows'][signal]:,} rows, "
                     f"{c['sampled_out']:,} sampled out, {c['dropped']:,} dropped")
    steps = ", ".join(f"{x['step']} ({x.get('cause')}, t={x.get('t_s')} s)" for x in s["actions"][:8]) or "none"
    lines.append(f"shedding steps: {steps}" + (f" and {len(s['actions']) - 8} more" if len(s["actions"]) > 8 else ""))
    lines.append(f"signals switched off: {', '.join(s['switched_off']) or 'none'}; degraded: {r['degraded']}")
    if r["overhead"]:
        lines.append(f"recorder overhead (direct): {r['overhead']['pct']} % whole run, kernel "
                     f"{r['overhead']['kernel_pct']} %, intake {r['overhead']['intake_pct']} %")
    lines.append(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    problems = verdict(r)
    lines += [f"NOT HELD: {p}" for p in problems] or ["held: every connect and lookup accounted for, "
                                                       "spans shed before probes, degraded iff shed"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--spans-per-s", type=float, default=6000.0)
    ap.add_argument("--connects-per-s", type=float, default=200.0, help="and as many DNS lookups")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("flood: needs root (slocap record loads BPF programs)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sloflood-") as tmp:
        r = run(a, Path(tmp))
    print(render(r, a))
    if a.json:
        a.json.write_text(json.dumps(r, indent=1, default=str) + "\n")
    return 1 if verdict(r) else 0


if __name__ == "__main__":
    sys.exit(main())
