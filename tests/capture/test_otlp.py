"""OTLP intake: the stock OpenTelemetry SDK exporters, unchanged, against OtlpReceiver; the
requests it takes flattened into spans as the recorder does after a recording."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.proto.trace.v1.trace_pb2 import (
    ResourceSpans,
    ScopeSpans,
    Span,
    Status,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from capture.otlp import JSON, PROTOBUF, OtlpReceiver, RawRequest, parse_endpoint
from capture.span_flatten import SOURCE, flatten_body, flatten_raw, raw_table
from capture.spans import (
    DEFAULT_LIMITS,
    SPANS_ENCODED,
    AttributeLimits,
    Flattened,
    flatten,
    render,
)
from runfmt.config import load_config
from runfmt.errors import CaptureError, ConfigError, DataError, SloError
from runfmt.schema import OTLP_RAW, SPAN_RESOURCES, SPANS
from runfmt.writer import RunWriters
from tests.support.runs import write_run

N_SPANS = 10_000
SMALL_CAP = 64 * 1024
EXPORT_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RESOURCE = {
    "service.name": "rag-api",
    "host.name": "node-a",
    "process.pid": 4242,
    "k8s.pod.name": "rag-api-7d9f",
    "k8s.namespace.name": "llm",
    "k8s.container.name": "api",
    "k8s.node.name": "node-a",
    "k8s.pod.uid": "0f3c9a1e-5b7d-4e2f-9c61-2a8b4d6e1f00",
    "deployment.environment.name": "lab",
}


class Sink:
    """on_request for the tests: keeps every request as it came, and flattens them as the
    recorder does once a recording ends (capture/span_flatten.py flatten_body), within `limits`."""

    def __init__(self, fail_first: bool = False, limits: AttributeLimits = DEFAULT_LIMITS) -> None:
        self.requests: list[RawRequest] = []
        self.fail_first = fail_first
        self.limits = limits
        self._flat: list[Flattened] | None = None

    def __call__(self, raw: RawRequest) -> None:
        if self.fail_first:
            self.fail_first = False
            raise OSError("disk full")
        self.requests.append(raw)
        self._flat = None

    def flattened(self) -> list[Flattened]:
        """Each request flattened, once (resource ids are random: a second flattening would differ)."""
        if self._flat is None:
            self._flat = [flatten_body(r.media_type, r.body, self.limits) for r in self.requests]
        return self._flat

    def table(self) -> pa.Table:
        tables = [f.spans for f in self.flattened()]
        return pa.concat_tables(tables) if tables else SPANS_ENCODED.empty_table()

    def resource_table(self) -> pa.Table:
        tables = [f.resources for f in self.flattened()]
        return pa.concat_tables(tables) if tables else SPAN_RESOURCES.empty_table()

    def cuts(self) -> tuple[int, int]:
        """(attributes dropped, values truncated) by the limits."""
        return (sum(f.attributes_dropped for f in self.flattened()),
                sum(f.values_truncated for f in self.flattened()))


@contextmanager
def running(sink: Sink, cap: int = 4 * 1024 * 1024) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", cap, sink)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def request(n: int = 3, attributes: list[KeyValue] | None = None) -> ExportTraceServiceRequest:
    """A small hand-built export request: n client spans of one trace."""
    spans = [
        Span(
            trace_id=bytes(range(16)),
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"span {i}",
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_000_001_000 + i,
            attributes=attributes or [],
        )
        for i in range(n)
    ]
    resource = ResourceProto(attributes=[kv("service.name", string_value="svc")])
    scope = ScopeSpans(scope=InstrumentationScope(name="lib"), spans=spans)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])])


def post(
    port: int, body: bytes, *, path: str = "/v1/traces", content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def send_with_sdk(exporter: SpanExporter) -> tuple[int, int]:
    """N_SPANS spans through the SDK, as a server span + client (LLM call) span per request.

    Returns the wall-clock window (ns) in which they were made.
    """
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    # the queue holds them all: the default 2048 would drop spans made faster than exported
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=N_SPANS, max_export_batch_size=512, schedule_delay_millis=50)
    )
    tracer = provider.get_tracer("llm-client", "0.1.0")
    started = time.time_ns()
    try:
        for seq in range(N_SPANS // 2):
            with tracer.start_as_current_span("POST /v1/chat", kind=SpanKind.SERVER, attributes={
                "http.request.method": "POST", "http.response.status_code": 200,
                "client.address": "10.0.0.7", "client.port": 51000,
            }):
                with tracer.start_as_current_span("chat m-small", kind=SpanKind.CLIENT, attributes={
                    "gen_ai.provider.name": "openai",
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "m-small",
                    "gen_ai.response.model": "m-small-2025",
                    "gen_ai.usage.input_tokens": seq,
                    "gen_ai.usage.output_tokens": 2 * seq,
                    "gen_ai.server.time_to_first_token": 0.25,
                    "server.address": "llm.local",
                    "server.port": 8000,
                    "thread.id": threading.get_ident(),
                    "app.request.seq": seq,
                    "app.shards": [1, 2, 3],
                }) as child:
                    if seq % 10 == 0:
                        child.set_status(StatusCode.ERROR, "upstream 503")
        ended = time.time_ns()
        assert provider.force_flush(timeout_millis=30_000), "SDK could not flush within 30 s"
    finally:
        provider.shutdown()
    return started, ended


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_exporter_spans_arrive_as_typed_rows(transport: str) -> None:
    sink = Sink()
    with running(sink) as receiver:
        if transport == "http":
            exporter: SpanExporter = HttpExporter(
                endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/traces", compression=Compression.Gzip, timeout=10
            )
        else:
            exporter = GrpcExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True, timeout=10)
        started, ended = send_with_sdk(exporter)
        counters = receiver.counters

    # taken as they came: one raw request per export, its body as the exporter encoded it
    assert {(r.protocol, r.media_type) for r in sink.requests} == {(transport, PROTOBUF)}
    assert sum(r.spans for r in sink.requests) == N_SPANS
    assert all(started <= r.arrival_ns <= time.time_ns() for r in sink.requests)

    table = sink.table()
    assert table.schema == SPANS_ENCODED
    assert table.cast(SPANS).schema == SPANS
    assert table.num_rows == N_SPANS
    assert counters.spans_received == N_SPANS
    assert counters.requests_ok == len(sink.requests)
    assert not any(counters.rejected.values())
    assert pc.count_distinct(table["span_id"]).as_py() == N_SPANS
    assert pc.count_distinct(table["trace_id"]).as_py() == N_SPANS // 2
    assert pc.all(pc.match_substring_regex(table["trace_id"], "^[0-9a-f]{32}$")).as_py()
    assert pc.all(pc.match_substring_regex(table["span_id"], "^[0-9a-f]{16}$")).as_py()

    # the resource's other attributes: once per export request, not per span
    resources = {r["resource_id"]: dict(r["attributes"]) for r in sink.resource_table().to_pylist()}
    assert len(resources) == len(sink.requests)
    assert set(table["resource_id"].to_pylist()) == set(resources)
    for attributes in resources.values():
        assert attributes["resource.deployment.environment.name"] == "lab"
        assert attributes["resource.telemetry.sdk.language"] == "python"
        assert "resource.service.name" not in attributes  # it is a column

    rows = table.to_pylist()
    server = {r["trace_id"]: r for r in rows if r["kind"] == "server"}
    client = [r for r in rows if r["kind"] == "client"]
    assert len(server) == len(client) == N_SPANS // 2
    assert all(r["parent_span_id"] is None for r in server.values())
    assert all(r["parent_span_id"] == server[r["trace_id"]]["span_id"] for r in client)
    for r in rows:
        assert started <= r["start_ns"] <= r["end_ns"] <= ended
        assert r["duration_ns"] == r["end_ns"] - r["start_ns"]
        assert (r["service_name"], r["host_name"], r["process_pid"]) == ("rag-api", "node-a", 4242)
        assert (r["k8s_pod_name"], r["k8s_namespace_name"], r["k8s_container_name"]) == ("rag-api-7d9f", "llm", "api")
        assert (r["k8s_node_name"], r["k8s_pod_uid"]) == ("node-a", RESOURCE["k8s.pod.uid"])
        assert r["scope_name"] == "llm-client"
        assert not [k for k in dict(r["attributes"]) if k.startswith("resource.")]

    for r in client:
        attributes = dict(r["attributes"])
        seq = int(attributes.pop("app.request.seq"))
        assert attributes.pop("app.shards") == "[1,2,3]"
        assert attributes == {}  # the rest are columns
        assert r["gen_ai_usage_input_tokens"] == seq and r["gen_ai_usage_output_tokens"] == 2 * seq
        assert (r["gen_ai_provider_name"], r["gen_ai_operation_name"]) == ("openai", "chat")
        assert (r["gen_ai_request_model"], r["gen_ai_response_model"]) == ("m-small", "m-small-2025")
        assert r["gen_ai_server_time_to_first_token"] == 0.25
        assert (r["server_address"], r["server_port"]) == ("llm.local", 8000)
        assert r["thread_id"] == threading.get_ident()
        expected_status = ("error", "upstream 503") if seq % 10 == 0 else ("unset", None)
        assert (r["status_code"], r["status_message"]) == expected_status
    for r in server.values():
        assert (r["http_request_method"], r["http_response_status_code"]) == ("POST", 200)
        assert (r["client_address"], r["client_port"]) == ("10.0.0.7", 51000)
        assert r["gen_ai_provider_name"] is None


def test_http_bad_requests_are_refused_and_recording_goes_on() -> None:
    sink = Sink()
    valid = request().SerializeToString()
    with running(sink, cap=SMALL_CAP) as receiver:
        port = receiver.http_port
        assert post(port, valid) == (200, b"")
        status, body = post(port, b"\xff\xff\xff this is not protobuf")
        assert status == 400
        assert "not a protobuf ExportTraceServiceRequest" in status_pb2.Status.FromString(body).message
        assert post(port, b"\0" * (SMALL_CAP + 1))[0] == 413
        assert _status_line_for_huge_declared_body(port) == "HTTP/1.1 413 Request Entity Too Large"
        assert post(port, valid, path="/v1/metrics")[0] == 404
        assert post(port, valid, content_type="text/plain")[0] == 415
        assert post(port, valid, headers={"Content-Encoding": "br"})[0] == 415
        assert post(port, valid) == (200, b"")
        counters = receiver.counters

    assert counters.requests_ok == 2
    assert counters.spans_received == 6 == sink.table().num_rows
    assert counters.rejected == {
        "malformed": 1, "too_large": 2, "unsupported_media_type": 2, "not_found": 1, "stopping": 0, "sink_error": 0,
        "stalled": 0,
    }


def test_a_stalled_body_is_refused_with_408_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from capture import otlp

    monkeypatch.setattr(otlp._Handler, "timeout", 0.5)
    with running(Sink(), cap=SMALL_CAP) as receiver:
        with socket.create_connection(("127.0.0.1", receiver.http_port), timeout=10) as conn:
            conn.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         b"Content-Length: 100\r\n\r\n" + b"\0" * 10)  # then nothing more
            status = conn.makefile("rb").readline().decode()
        counters = receiver.counters
    assert status.startswith("HTTP/1.1 408")
    assert counters.rejected["stalled"] == 1


def _exchange(port: int, raw: bytes) -> bytes:
    """Sends `raw` and reads until the receiver closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_http_speaks_what_exporters_and_curl_send() -> None:
    body = request().SerializeToString()
    head = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: %d\r\n" % len(body))
    with running(Sink(), cap=SMALL_CAP) as receiver:
        port = receiver.http_port
        # keep-alive: two requests on one connection, then the client's Connection: close is honoured
        both = _exchange(port, head + b"\r\n" + body + head + b"Connection: close\r\n\r\n" + body)
        assert both.count(b"HTTP/1.1 200 OK\r\n") == 2 and both.endswith(b"Connection: close\r\n\r\n")
        # curl asks before sending a large body; the answer comes after the body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(head + b"Expect: 100-continue\r\n\r\n")
            assert conn.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
            conn.sendall(body)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        # an HTTP/1.0 client gets its answer and the connection closes
        assert _exchange(port, head.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n" + body).startswith(
            b"HTTP/1.1 200 OK\r\n")
        assert _exchange(port, b"GET /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
            b"HTTP/1.1 405 Method Not Allowed\r\n")
        assert _exchange(port, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert _exchange(port, head.replace(b"Content-Length", b"Transfer-Encoding: chunked\r\nX") + b"\r\n"
                         ).startswith(b"HTTP/1.1 411 Length Required\r\n")
        assert _exchange(port, b"POST /v1/traces HTTP/1.1\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n").startswith(
            b"HTTP/1.1 400 Bad Request\r\n")
        assert post(port, body) == (200, b"")  # and it goes on
        assert receiver.counters.requests_ok == 5


def _wakeups(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/schedstat") as f:
        return int(f.read().split()[2])  # times the thread ran


def test_an_idle_http_receiver_does_not_wake() -> None:
    with running(Sink()) as receiver:
        thread = receiver._http_thread
        assert thread is not None and thread.native_id is not None
        time.sleep(0.3)
        before = _wakeups(thread.native_id)
        time.sleep(1.5)  # socketserver's serve_forever would have woken three times
        assert _wakeups(thread.native_id) == before


def _status_line_for_huge_declared_body(port: int) -> str:
    """Declares 1 GiB and sends none of it: the answer must come without reading the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        return conn.makefile("rb").readline().decode().strip()


def test_http_accepts_gzip_and_otlp_json() -> None:
    sink = Sink()
    with running(sink, cap=SMALL_CAP) as receiver:
        port = receiver.http_port
        zipped = gzip.compress(request().SerializeToString())
        assert post(port, zipped, headers={"Content-Encoding": "gzip"}) == (200, b"")
        bomb = gzip.compress(b"\0" * (SMALL_CAP * 16))  # small on the wire, large inflated
        assert len(bomb) < SMALL_CAP
        assert post(port, bomb, headers={"Content-Encoding": "gzip"})[0] == 413
        assert post(port, b"\x1f\x8b broken", headers={"Content-Encoding": "gzip"})[0] == 400

        # OTLP/JSON spells ids in hex, not in protobuf JSON's base64
        document = {"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173", "name": "json span", "kind": 3,
            "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
            "attributes": [{"key": "server.port", "value": {"intValue": "443"}}],
        }]}]}]}
        status, body = post(port, json.dumps(document).encode(), content_type="application/json")
        assert (status, body) == (200, b"{}")
        status, body = post(port, b'{"resourceSpans": 7}', content_type="application/json; charset=utf-8")
        assert status == 400 and "message" in json.loads(body)
        counters = receiver.counters

    # kept with Content-Encoding undone, and with the media type it is parsed by
    assert [(r.media_type, r.protocol) for r in sink.requests] == [(PROTOBUF, "http"), (JSON, "http")]
    assert sink.requests[0].body == request().SerializeToString()
    table = sink.table()
    assert table.num_rows == 4
    json_row = table.filter(pc.equal(table["name"], "json span")).to_pylist()[0]
    assert (json_row["trace_id"], json_row["span_id"]) == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    assert json_row["parent_span_id"] == "eee19b7ec3c1b173"
    assert (json_row["kind"], json_row["duration_ns"], json_row["server_port"]) == ("client", 10**9, 443)
    assert counters.rejected["too_large"] == 1 and counters.rejected["malformed"] == 2


def test_grpc_bad_requests_are_refused_and_recording_goes_on() -> None:
    sink = Sink()
    with running(sink, cap=SMALL_CAP) as receiver, grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        raw = channel.unary_unary(EXPORT_PATH, request_serializer=None, response_deserializer=None)
        stub.Export(request(), timeout=10)
        with pytest.raises(grpc.RpcError) as garbage:
            raw(b"\xff\xff\xff this is not protobuf", timeout=10)
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as oversized:
            raw(b"\0" * (SMALL_CAP + 1), timeout=10)
        assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as bad_id:
            bad = ScopeSpans(spans=[Span(trace_id=b"short", span_id=b"12345678")])
            stub.Export(ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[bad])]), timeout=10)
        assert bad_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "trace_id has 5 bytes, expected 16" in bad_id.value.details()
        stub.Export(request(), timeout=10)
        counters = receiver.counters

    assert counters.requests_ok == 2 and counters.spans_received == 6 == sink.table().num_rows
    assert counters.rejected["malformed"] == 2
    assert counters.rejected["too_large"] == 1  # gRPC's own limit is higher: the handler counts it


def test_a_failing_sink_is_counted_and_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink(fail_first=True)
    with running(sink) as receiver, grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with caplog.at_level(logging.ERROR, logger="capture.otlp"):
            assert post(receiver.http_port, request().SerializeToString())[0] == 500
        assert "storing 3 spans failed" in caplog.text and "disk full" in caplog.text
        assert post(receiver.http_port, request().SerializeToString()) == (200, b"")
        stub.Export(request(), timeout=10)
        counters = receiver.counters
    assert counters.rejected["sink_error"] == 1
    assert counters.requests_ok == 2 and sink.table().num_rows == 6


def test_stop_is_bounded_and_final() -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_sink(raw: RawRequest) -> None:
        calls.append(raw.spans)
        entered.set()
        release.wait(10)

    receiver = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", SMALL_CAP, slow_sink)
    receiver.start()
    port, body = receiver.http_port, request().SerializeToString()
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # an idle keep-alive client
    outcome: list[object] = []

    def stuck_client() -> None:
        try:
            outcome.append(post(port, body))
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    stuck = threading.Thread(target=stuck_client, daemon=True)
    try:
        idle.connect()
        stuck.start()
        assert entered.wait(10)
        begun = time.monotonic()
        receiver.stop(grace=0.5)  # on_request is blocked: stop must not wait for it
        assert time.monotonic() - begun < 3
        release.set()
        stuck.join(10)
        # stop() cut the stuck client off rather than wait for on_request
        assert len(outcome) == 1 and isinstance(outcome[0], (OSError, http.client.HTTPException))
        with pytest.raises((OSError, http.client.HTTPException)):  # the idle connection is gone
            idle.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            idle.getresponse()
    finally:
        release.set()
        idle.close()
    assert calls == [3]  # nothing reached on_request after stop()


def test_port_in_use_names_the_endpoint() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"127.0.0.1:{taken.getsockname()[1]}"
        for http_endpoint, grpc_endpoint, name, key in [
            (endpoint, "127.0.0.1:0", "OTLP/HTTP", "otlp.endpoint"),
            ("127.0.0.1:0", endpoint, "OTLP/gRPC", "otlp.grpc_endpoint"),
        ]:
            receiver = OtlpReceiver(http_endpoint, grpc_endpoint, SMALL_CAP, Sink())
            with pytest.raises(CaptureError) as error:
                receiver.start()
            assert error.value.message == f"cannot listen for {name} on {endpoint}: address already in use"
            assert error.value.hint == (
                f"is another collector or recorder running there? stop it, or set {key} to a free host:port"
            )


def test_parse_endpoint() -> None:
    assert parse_endpoint("127.0.0.1:4318") == ("127.0.0.1", 4318)
    assert parse_endpoint("[::1]:4317") == ("::1", 4317)
    for bad in ("4318", "host:", ":4318", "host:99999"):
        with pytest.raises(ConfigError):
            parse_endpoint(bad)


def test_flatten_types_fallbacks_and_attribute_rendering() -> None:
    attributes = [
        kv("gen_ai.system", string_value="vllm"),  # deprecated name: fills the column, stays in the map
        kv("gen_ai.usage.prompt_tokens", int_value=17),
        kv("gen_ai.usage.input_tokens", int_value=18),  # the current name wins
        kv("gen_ai.latency.time_to_first_token", double_value=0.045),
        kv("gen_ai.response.time_to_first_chunk", double_value=0.12),
        kv("server.port", string_value="443"),  # a number sent as text still types
        kv("client.port", string_value="not a port"),  # cannot type: kept as sent
        kv("flag", bool_value=True),
        kv("ratio", double_value=0.5),
        kv("blob", bytes_value=b"\x00\xff"),
        kv("tags", array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=2)])),
        kv("nested", kvlist_value=KeyValueList(values=[kv("k", bool_value=False)])),
        kv("unset"),
    ]
    req = request(n=1, attributes=attributes)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.parent_span_id = bytes(range(8))
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    row = flatten(req).spans.to_pylist()[0]

    assert row["parent_span_id"] == "0001020304050607"
    assert (row["status_code"], row["status_message"], row["kind"]) == ("error", "boom", "client")
    assert row["gen_ai_provider_name"] == "vllm"
    assert row["gen_ai_usage_input_tokens"] == 18
    assert row["gen_ai_server_time_to_first_token"] == 0.045
    assert row["gen_ai_response_time_to_first_chunk"] == 0.12
    assert (row["server_port"], row["client_port"]) == (443, None)
    assert dict(row["attributes"]) == {
        "gen_ai.system": "vllm",
        "gen_ai.usage.prompt_tokens": "17",
        "gen_ai.latency.time_to_first_token": "0.045",
        "client.port": "not a port",
        "flag": "true",
        "ratio": "0.5",
        "blob": "AP8=",
        "tags": '["a",2]',
        "nested": '{"k":false}',
        "unset": None,
    }


def test_flatten_rejects_ids_of_the_wrong_size() -> None:
    req = request(n=2)
    req.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01\x02"
    with pytest.raises(DataError, match="OTLP span 1: span_id has 2 bytes, expected 8"):
        flatten(req)
    empty = flatten(ExportTraceServiceRequest())
    assert (empty.num_spans, empty.resources.num_rows) == (0, 0)
    assert empty.spans.schema == SPANS_ENCODED


# --- resources once per resource, attribute limits --------------------------------------------


def _scope(name: str, first_span: int, n: int) -> ScopeSpans:
    spans = [Span(trace_id=bytes(range(16)), span_id=(first_span + i).to_bytes(8, "big"), name=f"s{first_span + i}")
             for i in range(n)]
    return ScopeSpans(scope=InstrumentationScope(name=name), spans=spans)


def test_resource_attributes_are_stored_once_per_resource() -> None:
    pod = "p" * 300
    req = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=ResourceProto(attributes=[
            kv("service.name", string_value="a"), kv("k8s.pod.name", string_value=pod), kv("env", string_value="x"),
            kv("process.pid", string_value="not a pid"),  # cannot type: kept as sent
        ]), scope_spans=[_scope("lib-1", 1, 3), _scope("lib-2", 4, 2)]),
        ResourceSpans(resource=ResourceProto(attributes=[kv("service.name", string_value="b")]),
                      scope_spans=[_scope("lib-1", 6, 2)]),
        ResourceSpans(resource=ResourceProto(attributes=[kv("env", string_value="spanless")])),  # no row
    ])
    flat = flatten(req)

    resources = {r["resource_id"]: dict(r["attributes"]) for r in flat.resources.to_pylist()}
    assert flat.resources.schema == SPAN_RESOURCES
    assert sorted(resources.values(), key=len) == [{}, {"resource.env": "x", "resource.process.pid": "not a pid"}]
    assert all(len(rid) == 16 for rid in resources)
    rows = flat.spans.to_pylist()
    assert [(r["name"], r["service_name"], r["scope_name"]) for r in rows] == [
        ("s1", "a", "lib-1"), ("s2", "a", "lib-1"), ("s3", "a", "lib-1"), ("s4", "a", "lib-2"), ("s5", "a", "lib-2"),
        ("s6", "b", "lib-1"), ("s7", "b", "lib-1")]
    assert [r["k8s_pod_name"] for r in rows] == [pod] * 5 + [None] * 2
    assert [resources[r["resource_id"]].get("resource.env") for r in rows] == ["x"] * 5 + [None] * 2
    assert all(r["attributes"] == [] for r in rows)
    # a resource's texts are held once, whatever the number of its spans
    for column in ("service_name", "k8s_pod_name", "resource_id", "scope_name"):
        assert pa.types.is_dictionary(flat.spans.schema.field(column).type)
    assert flat.spans["k8s_pod_name"].chunk(0).dictionary.to_pylist() == [pod]
    assert flat.spans.cast(SPANS).to_pylist() == rows


def test_attribute_limits_cut_what_is_past_them_and_count_it() -> None:
    limits = AttributeLimits(count=4, value_length=10)
    span_attributes = [
        kv("server.port", int_value=443),  # a column: counts toward the limit too
        kv("long", string_value="x" * 50),
        kv("blob", bytes_value=b"\xff" * 50),
        kv("nested", array_value=ArrayValue(values=[AnyValue(kvlist_value=KeyValueList(values=[
            kv("k", string_value="y" * 50)]))])),
        kv("gen_ai.request.model", string_value="past the limit"),
        kv("dropped", bool_value=True),
    ]
    req = request(n=2, attributes=span_attributes)  # its resource: service.name "svc"
    req.resource_spans[0].resource.attributes.extend(
        [kv("service.name", string_value="s" * 12)] + [kv(f"r{i}", int_value=i) for i in range(5)])
    flat = flatten(req, limits)

    for row in flat.spans.to_pylist():
        assert row["server_port"] == 443 and row["gen_ai_request_model"] is None
        assert dict(row["attributes"]) == {"long": "x" * 10, "blob": "//////////", "nested": '[{"k":"yyy'}
        assert row["service_name"] == "s" * 10  # the later one, cut
    (resource,) = flat.resources.to_pylist()
    assert dict(resource["attributes"]) == {"resource.r0": "0", "resource.r1": "1"}
    # each span: 2 attributes dropped, 3 values cut; the resource: 3 dropped, 1 cut
    assert (flat.attributes_dropped, flat.values_truncated) == (2 * 2 + 3, 2 * 3 + 1)


def test_render_stays_within_its_limit() -> None:
    wide = AnyValue(array_value=ArrayValue(values=[AnyValue()] * 100_000))
    deep = AnyValue(string_value="leaf")
    for i in range(20):  # 60 message levels: the parser takes 100
        deep = AnyValue(kvlist_value=KeyValueList(values=[kv(f"k{i}", array_value=ArrayValue(values=[deep]))]))
    for value in (wide, deep, AnyValue(string_value="é" * 100), AnyValue(bytes_value=bytes(100))):
        whole = render(value)
        for limit in (1, 7, 64, 4096):
            cut = render(value, limit)
            assert cut == whole[:limit + 1]
    assert render(wide).startswith("[null,null,")
    parsed = json.loads(render(deep))
    for i in reversed(range(20)):
        parsed = parsed[f"k{i}"][0]
    assert parsed == "leaf"


def test_the_configured_limits_apply_to_what_the_receiver_took_and_the_cuts_are_counted() -> None:
    cfg = load_config()["otlp"]
    limits = AttributeLimits.from_config(cfg)
    assert limits == AttributeLimits(count=128, value_length=4096)  # the defaults, as documented
    sink = Sink(limits=limits)
    req = request(n=3, attributes=[kv(f"a{i}", string_value="v" * 5000) for i in range(130)])
    with running(sink) as receiver:
        assert post(receiver.http_port, req.SerializeToString()) == (200, b"")
    assert sink.requests[0].body == req.SerializeToString()  # taken whole: the limits apply when flattened
    assert sink.cuts() == (3 * 2, 3 * 128)
    table = sink.table()
    assert {len(a) for a in table["attributes"].to_pylist()} == {128}
    assert {len(v) for a in table["attributes"].to_pylist() for _, v in a} == {4096}
    assert sink.resource_table().num_rows == 1


def test_span_parts_keep_resources_encoded_and_open_as_views(tmp_path) -> None:
    from analyze.session import open_runs

    run_dir = tmp_path / "tag=main" / "scenario=otlp" / "run=new"
    writers = RunWriters(run_dir, max_rows=1_000, max_seconds=60)
    long_name = "n" * 4000
    for i in range(3):  # three requests: dictionaries differ between the chunks of a part
        req = request(n=200)
        req.resource_spans[0].resource.attributes.extend([kv("host.name", string_value=f"{long_name}{i}"),
                                                          kv("env", string_value=f"e{i}")])
        flat = flatten(req)
        writers["spans"].add(flat.spans)
        writers["span_resources"].add(flat.resources)
    writers.flush()
    write_run(tmp_path, "new", scenario="otlp")  # the manifest
    part = run_dir / "spans" / "part-00000.parquet"
    assert pa.types.is_dictionary(pq.read_schema(part).field("host_name").type)
    assert part.stat().st_size < 100_000  # each long name once, not once per span
    write_run(tmp_path, "old", scenario="otlp", spans=[{"trace_id": "a" * 32, "span_id": "b" * 16}],
              parts=1)
    old_part = tmp_path / "tag=main" / "scenario=otlp" / "run=old" / "spans" / "part-00000.parquet"
    pq.write_table(pq.read_table(old_part).drop_columns(["resource_id"]), old_part)  # recorded before it

    runs = open_runs([tmp_path])
    rows = runs.con.sql(
        "SELECT s.run, count(*), count(DISTINCT s.host_name), count(r.resource_id), any_value(r.attributes['resource.env']) "
        "FROM spans s LEFT JOIN span_resources r USING (run, resource_id) GROUP BY s.run ORDER BY s.run").fetchall()
    assert rows[0][:4] == ("new", 600, 3, 600)
    assert rows[1] == ("old", 1, 0, 0, None)


# --- taken raw, flattened after the recording (capture/span_flatten.py) ------------------------


def test_a_malformed_body_or_an_id_of_the_wrong_size_is_refused_at_intake_with_400() -> None:
    """Checked when taken, not when flattened: the exporter is told at once, and nothing is kept."""
    bad_id = request(n=2)
    bad_id.resource_spans[0].scope_spans[0].spans[1].parent_span_id = b"\x01\x02\x03"
    with pytest.raises(DataError) as flattening:
        flatten(bad_id)
    json_bad_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abcd", "spanId": "eee19b7ec3c1b174"}]}]}]}
    sink = Sink()
    with running(sink) as receiver:
        status, body = post(receiver.http_port, bad_id.SerializeToString())
        assert status == 400
        # the same check as flatten's, in its words (one definition in capture/spans.py)
        assert status_pb2.Status.FromString(body).message == str(flattening.value)
        assert "OTLP span 1: parent_span_id has 3 bytes, expected 8" in str(flattening.value)
        status, body = post(receiver.http_port, b"\xff\xff\xff this is not protobuf")
        assert status == 400
        assert "not a protobuf ExportTraceServiceRequest" in status_pb2.Status.FromString(body).message
        status, body = post(receiver.http_port, json.dumps(json_bad_id).encode(), content_type=JSON)
        assert status == 400 and "OTLP span 0: trace_id has 2 bytes, expected 16" in json.loads(body)["message"]
        assert post(receiver.http_port, request(n=1).SerializeToString()) == (200, b"")
        counters = receiver.counters
    assert [r.spans for r in sink.requests] == [1]  # only the good one was kept
    assert counters.rejected["malformed"] == 3
    assert (counters.requests_ok, counters.spans_received) == (1, 1)


def _varied_requests() -> list[tuple[str, bytes]]:
    """(media type, body) of export requests of several shapes: resources with columns and
    other attributes, a spanless resource, attributes past small limits, OTLP/JSON."""
    wide = request(n=4, attributes=[kv(f"a{i}", string_value="v" * 40) for i in range(6)])
    wide.resource_spans[0].resource.attributes.extend([kv("k8s.pod.name", string_value="pod-a"),
                                                       kv("env", string_value="lab")])
    two = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=ResourceProto(attributes=[kv("service.name", string_value="b")]),
                      scope_spans=[_scope("lib-1", 100, 3)]),
        ResourceSpans(resource=ResourceProto(attributes=[kv("env", string_value="spanless")])),
        ResourceSpans(resource=ResourceProto(attributes=[kv("service.name", string_value="c")]),
                      scope_spans=[_scope("lib-2", 200, 2)]),
    ])
    document = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                                 "value": {"stringValue": "json"}}]},
                                   "scopeSpans": [{"spans": [{
                                       "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                       "name": "json span", "kind": 2, "startTimeUnixNano": "1544712660000000000",
                                       "endTimeUnixNano": "1544712661000000000"}]}]}]}
    return [(PROTOBUF, request(n=3).SerializeToString()), (PROTOBUF, wide.SerializeToString()),
            (JSON, json.dumps(document).encode()), (PROTOBUF, two.SerializeToString()),
            (PROTOBUF, request(n=1).SerializeToString())]


def _spans_with_resources(spans: pa.Table, resources: pa.Table) -> list[dict]:
    """Span rows with their resource's attributes in place of the (random) resource_id."""
    by_id = {r["resource_id"]: dict(r["attributes"]) for r in resources.to_pylist()}
    rows = spans.cast(SPANS).to_pylist()
    for r in rows:
        r["resource_attributes"] = by_id[r.pop("resource_id")]
    return rows


def test_flatten_raw_makes_the_spans_of_the_raw_parts_and_removes_them(tmp_path) -> None:
    """What the receiver took, through otlp_raw parts and flatten_raw: the same rows as each body
    flattened on its own, within the limits, each resource once; the raw parts gone after."""
    limits = AttributeLimits(count=5, value_length=16)
    run_dir = tmp_path / "run"
    writers = RunWriters(run_dir, max_rows=1_000, max_seconds=60)
    kept = Sink(limits=limits)

    def on_request(raw: RawRequest) -> None:
        kept(raw)
        writers["otlp_raw"].add(raw_table([raw]))

    receiver = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", SMALL_CAP, on_request)
    receiver.start()
    try:
        for i, (media_type, body) in enumerate(_varied_requests()):
            headers = {"Content-Encoding": "gzip"} if i == 1 else {}
            assert post(receiver.http_port, gzip.compress(body) if headers else body, content_type=media_type,
                        headers=headers)[0] == 200
            if i % 2:
                writers.flush("otlp_raw")  # three parts
    finally:
        receiver.stop()
    writers.flush("otlp_raw")
    raw = pq.read_table(run_dir / "otlp_raw")
    assert raw.schema.remove_metadata() == OTLP_RAW
    assert raw["body"].to_pylist() == [r.body for r in kept.requests]  # as sent, gzip undone
    assert raw["content_type"].to_pylist() == [PROTOBUF, PROTOBUF, JSON, PROTOBUF, PROTOBUF]
    assert set(raw["protocol"].to_pylist()) == {"http"}
    parts = [p.name for p in sorted((run_dir / "otlp_raw").glob("part-*.parquet"))]
    assert len(parts) == 3

    result = flatten_raw(run_dir, writers["spans"], writers["span_resources"], limits)

    assert (result.requests, result.spans, result.malformed, result.parts) == (5, 14, 0, parts)
    assert (result.attributes_dropped, result.values_truncated) == kept.cuts() != (0, 0)
    assert not (run_dir / "otlp_raw").exists()
    spans = pq.read_table(run_dir / "spans")
    resources = pq.read_table(run_dir / "span_resources")
    assert resources.num_rows == 6  # one per resource with spans, per request
    assert _spans_with_resources(spans, resources) == _spans_with_resources(kept.table(), kept.resource_table())
    sources = {pq.read_schema(p).metadata[SOURCE.encode()].decode() for p in (run_dir / "spans").iterdir()}
    assert sources == set(parts)


def test_a_flattening_cut_short_is_made_again_without_twice_a_span(tmp_path) -> None:
    """Cut after the span parts of an otlp_raw part were written but before it was removed:
    the next flattening (slocap repair's) removes those span parts and makes them again."""
    run_dir = tmp_path / "run"
    writers = RunWriters(run_dir, max_rows=1_000, max_seconds=60)
    requests = _varied_requests()
    for i, (media_type, body) in enumerate(requests):
        writers["otlp_raw"].add(raw_table([RawRequest("grpc", media_type, i, body, 0)]))
        if i == 1:
            writers.flush("otlp_raw")
    writers.flush("otlp_raw")
    first = run_dir / "otlp_raw" / "part-00000.parquet"
    saved = first.read_bytes()
    done = flatten_raw(run_dir, writers["spans"], writers["span_resources"])
    assert done.spans == 14
    (run_dir / "otlp_raw").mkdir()
    first.write_bytes(saved)  # as if the recorder was killed before removing it

    again = flatten_raw(run_dir, *(RunWriters(run_dir, max_rows=1_000, max_seconds=60)[t]
                                   for t in ("spans", "span_resources")))
    assert (again.requests, again.spans, again.parts) == (2, 7, ["part-00000.parquet"])
    assert sorted(Path(p).name for p in again.redone) == ["part-00000.parquet"] * 2  # spans, span_resources
    spans = pq.read_table(run_dir / "spans")
    resources = pq.read_table(run_dir / "span_resources")
    each_once = [flatten_body(media_type, body) for media_type, body in requests]
    assert sorted(map(repr, _spans_with_resources(spans, resources))) == sorted(map(repr, _spans_with_resources(
        pa.concat_tables([f.spans for f in each_once]), pa.concat_tables([f.resources for f in each_once]))))
    # numbered on after the parts there: the second part's spans were not overwritten
    assert sorted(p.name for p in (run_dir / "spans").iterdir()) == ["part-00001.parquet", "part-00002.parquet"]
    assert resources.num_rows == 6


def test_a_damaged_raw_part_is_named_and_kept_and_the_others_flattened(tmp_path) -> None:
    run_dir = tmp_path / "run"
    writers = RunWriters(run_dir, max_rows=1_000, max_seconds=60)
    for i, (media_type, body) in enumerate(_varied_requests()[:2]):
        writers["otlp_raw"].add(raw_table([RawRequest("http", media_type, i, body, 0)]))
        writers.flush("otlp_raw")
    damaged = run_dir / "otlp_raw" / "part-00000.parquet"
    damaged.write_bytes(b"PAR1 not really")
    result = flatten_raw(run_dir, writers["spans"], writers["span_resources"])
    assert result.parts == ["part-00001.parquet"] and result.spans == 4
    assert len(result.damaged) == 1 and result.damaged[0].startswith(f"{damaged}: ")
    assert damaged.exists()


@pytest.mark.kernel
def test_a_recorded_run_holds_its_requests_flattened_and_no_raw_part(recording) -> None:
    """slocap record keeps the requests raw while it records (the manifest says so) and, when
    it ends, the spans are those of the bodies sent, flattened; otlp_raw is gone."""
    sent = _varied_requests() * 2
    with recording(["dns"], part_max_seconds=0.3, poll_timeout_ms=100) as rec:
        port = int(rec.otlp_endpoint.rsplit(":", 1)[1])
        for i, (media_type, body) in enumerate(sent):
            assert post(port, body, content_type=media_type)[0] == 200
            if i == len(sent) // 2:
                time.sleep(0.8)  # a part of raw requests is written
        deadline = time.monotonic() + 10
        while len(list((rec.run_dir / "otlp_raw").glob("part-*.parquet"))) < 2:
            assert time.monotonic() < deadline, "no otlp_raw parts written while recording"
            time.sleep(0.1)
        while_recording = json.loads((rec.run_dir / "manifest.json").read_text())["otlp"]
        assert not list((rec.run_dir / "spans").glob("part-*.parquet"))
    assert while_recording["spans_state"] == "raw" and while_recording["flatten"] is None

    run_dir = rec.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    otlp = manifest["otlp"]
    limits = AttributeLimits.from_config(manifest["config"]["otlp"])
    expected = [flatten_body(media_type, body, limits) for media_type, body in sent]
    n_spans = sum(f.num_spans for f in expected)
    assert otlp["spans_state"] == "final"
    assert (otlp["requests_ok"], otlp["raw_requests_written"]) == (len(sent), len(sent))
    assert otlp["spans_received"] == otlp["spans_written"] == n_spans
    assert (otlp["flatten"]["requests"], otlp["flatten"]["spans"]) == (len(sent), n_spans)
    assert otlp["flatten"]["cpu_s"] > 0 and otlp["flatten"]["us_per_request"] > 0
    assert otlp["intake_us_per_request"] > 0
    assert otlp["attributes_dropped"] == sum(f.attributes_dropped for f in expected)
    assert otlp["values_truncated"] == sum(f.values_truncated for f in expected)
    assert manifest["files"]["otlp_raw"] == [] and not (run_dir / "otlp_raw").exists()
    assert manifest["files"]["spans"] == sorted(p.name for p in (run_dir / "spans").glob("part-*.parquet"))
    spans = pq.read_table(sorted((run_dir / "spans").glob("part-*.parquet")), partitioning=None)
    resources = pq.read_table(sorted((run_dir / "span_resources").glob("part-*.parquet")), partitioning=None)
    assert _spans_with_resources(spans, resources) == _spans_with_resources(
        pa.concat_tables([f.spans for f in expected]), pa.concat_tables([f.resources for f in expected]))


@pytest.mark.kernel
def test_a_failed_flattening_leaves_the_run_raw_and_repair_flattens_it(recording, monkeypatch) -> None:
    """Flattening fails at the end of a recording: the run is finished, its requests stay raw
    (the manifest says why), and slocap repair flattens them without calling the run cut."""
    from capture import recorder
    from capture.repair import repair_run

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder, "flatten_raw", disk_full)
    with recording(["dns"]) as rec:
        port = int(rec.otlp_endpoint.rsplit(":", 1)[1])
        for media_type, body in _varied_requests():
            assert post(port, body, content_type=media_type)[0] == 200
    run_dir = rec.run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["state"] == "finished"
    assert manifest["otlp"]["spans_state"] == "raw" and "No space left" in manifest["otlp"]["flatten"]["error"]
    assert manifest["files"]["otlp_raw"] == ["part-00000.parquet"] and manifest["otlp"]["spans_written"] == 0

    before = manifest
    repaired = repair_run(run_dir)
    assert (repaired.flattened.requests, repaired.flattened.spans) == (5, 14)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # not cut: it finished, and says so as before
    assert (manifest["state"], manifest["complete"], manifest["stop_reason"]) == (
        "finished", before["complete"], before["stop_reason"])
    otlp = manifest["otlp"]
    assert (otlp["spans_state"], otlp["spans_written"], otlp["flatten"]["by"]) == ("final", 14, "slocap repair")
    assert manifest["files"]["otlp_raw"] == [] and not (run_dir / "otlp_raw").exists()
    with pytest.raises(SloError, match="is not cut"):  # nothing left to do
        repair_run(run_dir)
