"""The OTLP receiver's memory is bounded by construction: any valid export body up to
otlp.max_request_bytes keeps the receiving process's peak RSS under MAX_PEAK_RSS (README,
"Spans, trace stamping and pods").

The receiver runs in a process of its own (tests/support/otlp_receiver.py), storing parts as
the recorder does: each request taken as it came (otlp_raw), then flattened into spans
(capture/span_flatten.py), which the recorder does when a recording ends. Each body is built
byte by byte to just under the size cap, in a shape meant to blow memory up: resource
attributes repeated over many spans, many span attributes, huge values, deeply nested values,
many resources. The peak (VmHWM of /proc/PID/status, reset before each body, read once it is
taken and flattened) must stay under the bound, and what was stored must be right: limits
applied, the cuts counted, every resource stored once.
"""

from __future__ import annotations

import http.client
import json
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from capture.spans import AttributeLimits
from runfmt.config import load_config

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = ROOT / "tests" / "support" / "otlp_receiver.py"
MAX_PEAK_RSS = 512 * 2**20  # the documented bound, bytes
CONFIG = load_config()
CAP = CONFIG["otlp"]["max_request_bytes"]
LIMITS = AttributeLimits.from_config(CONFIG["otlp"])
MARGIN = 256  # bytes a body stays under the cap
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# --- protobuf wire format, so bodies of millions of fields build in a moment -------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def string_value(text: str) -> bytes:  # AnyValue
    return _ld(1, text.encode())


def int_value(n: int) -> bytes:  # AnyValue
    return _varint(3 << 3) + _varint(n)


def array_value(values: list[bytes]) -> bytes:  # AnyValue of AnyValues
    return _ld(5, b"".join(_ld(1, v) for v in values))


def kvlist_value(pairs: list[bytes]) -> bytes:  # AnyValue of KeyValues
    return _ld(6, b"".join(_ld(1, p) for p in pairs))


def kv(key: str, value: bytes) -> bytes:  # KeyValue
    return _ld(1, key.encode()) + _ld(2, value)


def span(n: int, attributes: bytes = b"") -> bytes:
    """A Span: its ids (trace n, span n + 1), times, and `attributes` (concatenated
    `_ld(9, kv)` fields)."""
    return (_ld(1, n.to_bytes(16, "big")) + _ld(2, (n + 1).to_bytes(8, "big"))
            + b"\x39" + struct.pack("<Q", 1_700_000_000_000_000_000 + n)
            + b"\x41" + struct.pack("<Q", 1_700_000_000_000_001_000 + n) + attributes)


def attributes(pairs: list[bytes]) -> bytes:
    return b"".join(_ld(9, p) for p in pairs)


def resource_spans(resource_attributes: list[bytes], spans: list[bytes], scope: str = "lib") -> bytes:
    resource = b"".join(_ld(1, a) for a in resource_attributes)
    scope_spans = _ld(1, _ld(1, scope.encode())) + b"".join(_ld(2, s) for s in spans)
    return _ld(1, resource) + _ld(2, scope_spans)


def request(resources: list[bytes]) -> bytes:  # ExportTraceServiceRequest
    return b"".join(_ld(1, r) for r in resources)


def fill(make: Callable[[int], bytes], per_item: int) -> tuple[bytes, int]:
    """(make(n), n) for an n that makes it just under the cap, from the bytes per item."""
    target = CAP - MARGIN
    n = max(1, target // per_item)
    for _ in range(8):
        body = make(n)
        if CAP * 0.98 <= len(body) <= target:
            return body, n
        n = max(1, n * target // len(body) - (len(body) > target))
    raise AssertionError(f"no body of {CAP * 0.98:.0f} to {target} bytes: {len(body)} with n={n}")


# --- adversarial bodies --------------------------------------------------------------------


@dataclass
class Body:
    name: str
    body: bytes
    spans: int
    resources: int
    dropped: int  # attributes past the count limit
    truncated: int  # values past the length limit
    transport: str = "http"  # or "json" (OTLP/JSON over HTTP), "grpc"


RESOURCE_COLUMN_KEYS = ("service.name", "host.name", "k8s.pod.name", "k8s.namespace.name", "k8s.container.name",
                        "k8s.node.name", "k8s.pod.uid")


def wide_resource() -> Body:
    """The reported case, filled up: 2,000 resource attributes over as many spans as fit.
    The resource columns' values are long too: each span repeats them."""
    n_attributes = 2_000
    long = "r" * (LIMITS.value_length + 100)
    resource = [kv(k, string_value(long)) for k in RESOURCE_COLUMN_KEYS]
    resource += [kv(f"app.resource.attribute.{i}", string_value(f"value-{i}")) for i in range(n_attributes)]
    one = len(_ld(2, span(0)))

    def make(n: int) -> bytes:
        return request([resource_spans(resource, [span(i) for i in range(n)])])

    body, spans = fill(make, one)
    kept = min(LIMITS.count, len(resource))
    return Body("2,000 resource attributes x every span", body, spans, 1, len(resource) - kept,
                min(kept, len(RESOURCE_COLUMN_KEYS)))


def many_span_attributes() -> Body:
    """Spans of 1,000 tiny attributes each."""
    per_span = 1_000
    pairs = attributes([kv(f"a{i}", b"") for i in range(per_span)])
    one = len(_ld(2, span(0, pairs)))
    body, spans = fill(lambda n: request([resource_spans([], [span(i, pairs) for i in range(n)])]), one)
    return Body("1,000 attributes per span", body, spans, 1, spans * (per_span - LIMITS.count), 0)


def json_attributes() -> Body:
    """OTLP/JSON: one span with as many attributes as fit, each a small object to decode."""
    def make(n: int) -> bytes:
        span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "attributes": [{"key": ""}] * n}
        return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}, separators=(",", ":")).encode()

    body, n = fill(make, len('{"key":""},'))
    return Body("OTLP/JSON, attributes", body, 1, 1, n - LIMITS.count, 0, "json")


def huge_values() -> Body:
    """A few spans whose values are as large as the body allows: a string, bytes, and an
    array of long strings."""
    size = (CAP - 64 * 1024) // 6
    pairs = attributes([
        kv("big.string", string_value("s" * size)),
        kv("big.bytes", _ld(7, b"\xff" * size)),
        kv("big.array", array_value([string_value("a" * (size // 1000))] * 1000)),
    ])
    body = request([resource_spans([kv("service.name", string_value("huge"))], [span(0, pairs), span(1, pairs)])])
    return Body("huge values", body, 2, 1, 0, 6)


def deeply_nested() -> Body:
    """Attributes nested as deep as the protobuf parser takes, with wide arrays inside, on as
    many spans as fit."""
    leaf = array_value([b""] * 2_000)  # 2,000 empty AnyValues: "null" each in JSON
    value = leaf
    for depth in range(30):  # 75 message levels: the parser takes 100
        value = kvlist_value([kv(f"k{depth}", value), kv("x", int_value(depth))]) if depth % 2 else \
            array_value([value, string_value("x")])
    pairs = attributes([kv("nested", value)])
    one = len(_ld(2, span(0, pairs)))
    body, spans = fill(lambda n: request([resource_spans([], [span(i, pairs) for i in range(n)])]), one)
    return Body("deeply nested values", body, spans, 1, 0, spans)


def many_resources() -> Body:
    """A resource and a scope per span, each with attributes of its own."""
    def one_resource(i: int) -> bytes:
        return resource_spans([kv("service.name", string_value(f"svc-{i}")), kv("app.id", int_value(i))],
                              [span(i)], scope=f"scope-{i}")
    one = len(_ld(1, one_resource(10**6)))
    body, resources = fill(lambda n: request([one_resource(i) for i in range(n)]), one)
    return Body("a resource per span", body, resources, resources, 0, 0)


def grpc_wide_resource() -> Body:
    b = wide_resource()
    return Body(b.name + ", gRPC", b.body, b.spans, b.resources, b.dropped, b.truncated, "grpc")


BODIES = [wide_resource, many_span_attributes, json_attributes, huge_values, deeply_nested, many_resources,
          grpc_wide_resource]


# --- the receiver in its own process --------------------------------------------------------


class Receiver:
    def __init__(self, process: subprocess.Popen, pid: int, port: int, grpc_port: int) -> None:
        self.process, self.pid, self.port, self.grpc_port = process, pid, port, grpc_port

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        """The peak starts again from the current RSS (Linux: clear_refs 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def send(self, body: bytes, transport: str) -> str:
        """Sends one export body; "ok", or how it was refused."""
        if transport == "grpc":
            with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
                export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
                try:
                    export(body, timeout=120)
                except grpc.RpcError as exc:
                    return str(exc.code())
            return "ok"
        media_type = "application/json" if transport == "json" else "application/x-protobuf"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": media_type})
            response = conn.getresponse()
            response.read()
            return "ok" if response.status == 200 else f"HTTP {response.status}"
        finally:
            conn.close()

    def flush(self) -> dict:
        """Writes the open parts and flattens the requests taken; the receiver's counters and
        the flattening's."""
        self.process.stdin.write("flush\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())


@contextmanager
def receiver(run_dir: Path) -> Iterator[Receiver]:
    with subprocess.Popen([sys.executable, str(RECEIVER), str(run_dir)], cwd=ROOT, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        try:
            ready = json.loads(process.stdout.readline() or "null")
            assert ready, f"the receiver did not start (exit code {process.poll()})"
            yield Receiver(process, ready["pid"], ready["http_port"], ready["grpc_port"])
        finally:
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_any_body_under_the_cap_keeps_peak_rss_under_the_bound(tmp_path: Path) -> None:
    """Any OTLP body shape up to otlp.max_request_bytes: receiver peak RSS under 512 MiB, limits applied and counted.

    What it stores is cut to the attribute limits, with the cuts counted."""
    bodies = [make() for make in BODIES]
    peaks: dict[str, int] = {}
    with receiver(tmp_path) as r:
        for b in bodies:
            assert len(b.body) <= CAP
            r.reset_peak()
            assert r.send(b.body, b.transport) == "ok", b.name
            r.flush()  # flattened, as the recorder does when the recording ends
            peaks[b.name] = r.peak_rss()
        counters = r.flush()
    report = ", ".join(f"{name}: {peak / 2**20:.0f} MiB" for name, peak in peaks.items())
    assert max(peaks.values()) <= MAX_PEAK_RSS, report

    # what was stored is right: every span, each resource once, within the limits
    assert counters["requests_ok"] == len(bodies)
    assert counters["spans_received"] == sum(b.spans for b in bodies)
    assert (counters["flattened_requests"], counters["flattened_spans"]) == (len(bodies), counters["spans_received"])
    assert counters["attributes_dropped"] == sum(b.dropped for b in bodies)
    assert counters["values_truncated"] == sum(b.truncated for b in bodies)
    assert not (tmp_path / "otlp_raw").exists()
    spans = pq.read_table(tmp_path / "spans")
    resources = pq.read_table(tmp_path / "span_resources")
    assert spans.num_rows == counters["spans_received"]
    assert resources.num_rows == sum(b.resources for b in bodies)
    assert set(spans["resource_id"].to_pylist()) == set(resources["resource_id"].to_pylist())
    longest = {}
    for name, table in (("spans", spans), ("span_resources", resources)):
        entries = [np.diff(c.offsets.to_numpy()) for c in table["attributes"].chunks]
        assert max(int(e.max(initial=0)) for e in entries) <= LIMITS.count
        values = pc.utf8_length(pa.chunked_array([c.items for c in table["attributes"].chunks]))
        longest[name] = pc.max(values).as_py()
    longest["service_name"] = pc.max(pc.utf8_length(spans["service_name"].cast("string"))).as_py()
    assert longest == {"spans": LIMITS.value_length, "span_resources": len("value-120"),
                       "service_name": LIMITS.value_length}


@pytest.mark.kernel
def test_the_recorder_itself_stays_under_the_bound_with_every_shape(tmp_path: Path) -> None:
    """slocap record with its probes loaded takes every adversarial body twice: peak RSS under 512 MiB.

    Peak RSS: the manifest's recorder.max_rss_kb (VmHWM); each body over the transport it came with."""
    import os
    import signal
    import socket
    import time

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    http_port, grpc_port = free_port(), free_port()
    cfg = tmp_path / "config.json"
    # memory is the question here, not shedding: these bodies cost far more CPU than the limit
    cfg.write_text(json.dumps({"otlp": {"endpoint": f"127.0.0.1:{http_port}",
                                        "grpc_endpoint": f"127.0.0.1:{grpc_port}"},
                               "safety": {"max_overhead_pct": 100}}))
    out = tmp_path / "runs"
    slocap = str(Path(sys.executable).parent / "slocap")
    proc = subprocess.Popen([slocap, "record", "--out", str(out), "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("tag=*/scenario=*/run=*/manifest.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.1)
        r = Receiver(proc, proc.pid, http_port, grpc_port)
        for make in BODIES:
            b = make()
            for _ in range(2):
                assert r.send(b.body, b.transport) == "ok", b.name
        os.kill(proc.pid, signal.SIGUSR1)  # ends the recording as planned
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    (run_dir,) = out.glob("tag=*/scenario=*/run=*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["otlp"]["requests_ok"] == 2 * len(BODIES)
    assert (manifest["otlp"]["spans_state"], manifest["otlp"]["flatten"]["requests"]) == ("final", 2 * len(BODIES))
    peak = manifest["recorder"]["max_rss_kb"] * 1024
    assert peak <= MAX_PEAK_RSS, f"recorder peak RSS {peak / 2**20:.0f} MiB"
