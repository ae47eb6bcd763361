"""sloan export otlp against real receivers on loopback: the recorder's own OTLP receiver
(capture/otlp.py) for spans, over HTTP and gRPC, and a small OTLP/HTTP logs endpoint here.
What arrives is held against the run's files and the analysis of the same run."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

import capture.spans
from analyze import otlp_export
from analyze.correlate import CONFIDENCE, correlate_run
from analyze.otlp_export import ExportError, Target, failure_reason
from capture.otlp import OtlpReceiver, RawRequest
from capture.span_flatten import flatten_body
from runfmt.config import load_config
from runfmt.contracts import validate
from runfmt.errors import ConfigError
from runfmt.schema import SPAN_RESOURCES, SPANS
from tests.support.runs import write_run

DATASET = Path(__file__).resolve().parents[2] / "datasets" / "labeled"
RUN = DATASET / "tag=main" / "scenario=dns_latency" / "run=20261205T064135Z-faa9"

# the columns a receiver fills the same way from what was sent (kind: see the unspecified test)
SAME = [f.name for f in SPANS if f.name not in ("attributes", "resource_id")]


class Spans:
    """on_request of an OtlpReceiver: keeps every request as it came, and flattens them as
    the recorder does after a recording (capture/span_flatten.py flatten_body)."""

    def __init__(self) -> None:
        self.requests: list[RawRequest] = []
        self.tables: list[pa.Table] = []
        self.resource_tables: list[pa.Table] = []

    def __call__(self, raw: RawRequest) -> None:
        self.requests.append(raw)
        flat = flatten_body(raw.media_type, raw.body)
        self.tables.append(flat.spans)
        self.resource_tables.append(flat.resources)

    def table(self) -> pa.Table:
        return pa.concat_tables(self.tables).cast(SPANS) if self.tables else SPANS.empty_table()

    def rows(self) -> dict[tuple[str, str], dict]:
        """(trace_id, span_id) -> row, its attributes map joined with its resource's."""
        resources = {r["resource_id"]: r["attributes"] for r in
                     (pa.concat_tables(self.resource_tables) if self.resource_tables
                      else SPAN_RESOURCES.empty_table()).to_pylist()}
        out = {}
        for r in self.table().to_pylist():
            r["attributes"] = dict(r["attributes"]) | dict(resources.get(r["resource_id"]) or ())
            out[(r["trace_id"], r["span_id"])] = r
        return out


@contextmanager
def receiver() -> Iterator[tuple[OtlpReceiver, Spans]]:
    spans = Spans()
    r = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", 64 * 1024 * 1024, spans)
    r.start()
    try:
        yield r, spans
    finally:
        r.stop()


class _Logs(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/logs":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.requests.append(ExportLogsServiceRequest.FromString(body))
        answer = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib's signature
        pass


@contextmanager
def logs_endpoint() -> Iterator[ThreadingHTTPServer]:
    """An OTLP/HTTP endpoint taking logs only, on a free loopback port; `requests` holds them."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Logs)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def recorded() -> dict:
    """The run's spans as recorded (their resource's attributes among theirs, as `resource.<key>`,
    the way an export carries them), and what correlation says of them."""
    spans = pq.read_table(sorted((RUN / "spans").glob("part-*.parquet")))
    resources = {r["resource_id"]: r["attributes"] for r in
                 pq.read_table(sorted((RUN / "span_resources").glob("part-*.parquet"))).to_pylist()}
    rows = spans.select([f.name for f in SPANS if f.name in spans.column_names]).to_pylist()
    for row in rows:
        row["attributes"] = list(row["attributes"] or []) + list(resources.get(row.pop("resource_id"), []))
    corr = correlate_run(RUN)
    return {"spans": {(r["trace_id"], r["span_id"]): r for r in rows},
            "enriched": {(r["trace_id"], r["span_id"]): r for r in corr.enriched_spans.to_pylist()},
            "correlated": corr.correlated.to_pylist()}


# --- spans ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_spans_arrive_with_their_ids_times_and_kernel_evidence(protocol, recorded, sloan):
    with receiver() as (r, got):
        endpoint = (f"http://127.0.0.1:{r.http_port}" if protocol == "http"
                    else f"127.0.0.1:{r.grpc_port}")  # HOST:PORT: plain text only with --insecure
        result = sloan("export", "otlp", "--runs", RUN, "--endpoint", endpoint, "--protocol", protocol,
                       "--insecure", "--signal", "traces", "--batch-size", 1000)
        counters = r.counters
    assert result.exit_code == 0, result.output
    n = len(recorded["spans"])
    evidence = sum(1 for e in recorded["enriched"].values() if e["matched_events"])
    where = f"http://127.0.0.1:{r.http_port}/v1/traces" if protocol == "http" else f"http://127.0.0.1:{r.grpc_port}"
    assert result.stdout.splitlines() == [
        f"dns_latency 20261205T064135Z-faa9: {n:,} spans ({evidence:,} with kernel evidence)",
        f"sent {n:,} spans and 0 log records of 1 run(s) to {where} ({protocol})",
    ]
    assert counters.requests_ok == -(-n // 1000) and counters.spans_received == n

    arrived = got.rows()
    assert set(arrived) == set(recorded["spans"])  # the same trace and span ids, each once
    assert got.table().num_rows == n
    best: dict[tuple[str, str], float] = {}
    for e in recorded["correlated"]:
        key = (e["trace_id"], e["span_id"])
        best[key] = max(best.get(key, 0.0), e["confidence"])
    carried: Counter = Counter()
    for key, sent in arrived.items():
        original = recorded["spans"][key]
        assert {c: sent[c] for c in SAME} == {c: original[c] for c in SAME}, key
        attributes = sent["attributes"]
        ours = {k: attributes.pop(k) for k in list(attributes) if k.startswith("slo.")}
        assert attributes == dict(original["attributes"]), key  # resource ones as `resource.<key>` in both
        e = recorded["enriched"][key]
        expected = {"slo.run.id": "20261205T064135Z-faa9", "slo.kernel.events": str(e["matched_events"])}
        for s in otlp_export.TIMED_SIGNALS:
            if e[f"{s}_count"]:
                expected |= {f"slo.kernel.{s}.count": str(e[f"{s}_count"]),
                             f"slo.kernel.{s}.sum_ms": repr(e[f"{s}_ms_sum"]),
                             f"slo.kernel.{s}.max_ms": repr(e[f"{s}_ms_max"])}
        if e["retransmits"]:
            expected["slo.kernel.retransmits"] = str(e["retransmits"])
        if e["matched_events"]:
            tier = next(t for t, c in CONFIDENCE.items() if c == best[key])
            expected |= {"slo.correlation.tier": tier, "slo.correlation.confidence": repr(best[key])}
        assert ours == expected, key
        carried.update(list(ours))
    # the run has evidence of several kinds to carry
    assert carried["slo.kernel.dns.count"] > 0 and carried["slo.kernel.connect.count"] > 0


def test_a_run_without_kernel_events_or_requests_sends_its_spans_as_recorded(tmp_path, sloan):
    """span_resources (runs recorded since it exists), typed columns, an older attribute name,
    an error status; no `slo.kernel.*` without kernel events, and notes say what is missing."""
    t0 = 1_800_000_000_000_000_000
    spans = [
        {"trace_id": "ab" * 16, "span_id": "01" * 8, "name": "POST /v1/chat", "kind": "server", "start_ns": t0,
         "end_ns": t0 + 5_000_000, "duration_ns": 5_000_000, "status_code": "error", "status_message": "upstream 503",
         "service_name": "gw", "host_name": "node-a", "process_pid": 42, "k8s_pod_name": "gw-7d9f",
         "k8s_namespace_name": "llm", "http_response_status_code": 503, "http_request_method": "POST",
         "scope_name": "lib", "attributes": [("http.status_code", "503"), ("app.shards", "[1,2]")],
         "resource_id": "00" * 8},
        {"trace_id": "ab" * 16, "span_id": "02" * 8, "parent_span_id": "01" * 8, "name": "chat m", "kind": "client",
         "start_ns": t0 + 1000, "end_ns": t0 + 4_000_000, "duration_ns": 3_999_000, "status_code": "unset",
         "service_name": "gw", "host_name": "node-a", "process_pid": 42, "k8s_pod_name": "gw-7d9f",
         "k8s_namespace_name": "llm", "gen_ai_usage_input_tokens": 12, "gen_ai_server_time_to_first_token": 0.25,
         "gen_ai_provider_name": "openai", "server_port": 8000, "thread_id": 7, "scope_name": "lib",
         "attributes": [], "resource_id": "00" * 8},
    ]
    resources = [{"resource_id": "00" * 8, "attributes": [("resource.deployment.environment.name", "lab")]}]
    run = write_run(tmp_path, "r1", spans=spans, span_resources=resources)
    with receiver() as (r, got):
        result = sloan("export", "otlp", "--runs", run, "--endpoint", f"http://127.0.0.1:{r.http_port}/v1/traces")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "dns_latency r1: 2 spans (0 with kernel evidence), 0 log records (0 SLO events, 0 incident attributions)",
        "  note: no requests (requests/*.parquet): spans only, no SLO events or attributions",
        "  note: no kernel events: spans sent without kernel evidence",
        (f"sent 2 spans and 0 log records of 1 run(s) to http://127.0.0.1:{r.http_port}/v1/traces, "
         f"http://127.0.0.1:{r.http_port}/v1/logs (http)"),
    ]
    arrived = got.rows()
    for s in spans:
        sent = arrived[(s["trace_id"], s["span_id"])]
        assert {c: sent[c] for c in SAME} == {c: s.get(c) for c in SAME}
        assert sent["attributes"] == dict(s["attributes"]) | {"resource.deployment.environment.name": "lab",
                                                              "slo.run.id": "r1"}


def test_a_span_of_unspecified_kind_goes_out_as_internal(tmp_path):
    """The SDK has no unspecified kind; everything else of the span is kept."""
    run = write_run(tmp_path, "r1", spans=[{"trace_id": "cd" * 16, "span_id": "03" * 8, "name": "x",
                                            "kind": "unspecified", "start_ns": 1, "end_ns": 2, "attributes": []}])
    telemetry = otlp_export.load_run(run, load_config())
    span = next(otlp_export._Builder(telemetry).spans(10))[0]
    assert span.kind.name == "INTERNAL"
    assert (span.context.trace_id, span.context.span_id) == (int("cd" * 16, 16), int("03" * 8, 16))
    assert span.parent is None and (span.start_time, span.end_time) == (1, 2)


def test_the_column_names_are_the_recorders():
    """A span goes out with the attribute keys the recorder took its columns from."""
    assert otlp_export.RESOURCE_KEYS == {c: k for k, (c, _) in capture.spans._RESOURCE_COLUMNS.items()}
    assert otlp_export.SPAN_KEYS == {c: k for k, (c, _) in capture.spans._SPAN_COLUMNS.items()}
    assert otlp_export.FALLBACK_KEYS == {k: c for k, (c, _) in capture.spans._FALLBACKS.items()}


# --- log records ------------------------------------------------------------------------------


def test_slo_events_and_attributions_arrive_as_v1_log_records(sloan):
    from analyze.attribution import Model, attribute_evidence, collect_run

    config = load_config()
    ev = collect_run(RUN, config)
    events = list(ev.slo.events())
    attributions = attribute_evidence(ev, Model.named(None)).documents()
    assert attributions, "the run pages: its attributions are part of the test"
    with logs_endpoint() as server:
        result = sloan("export", "otlp", "--runs", RUN, "--endpoint", f"http://127.0.0.1:{server.server_port}",
                       "--signal", "logs")
    assert result.exit_code == 0, result.output
    n = len(events) + len(attributions)
    assert result.stdout.splitlines()[-1] == (f"sent 0 spans and {n:,} log records of 1 run(s) to "
                                              f"http://127.0.0.1:{server.server_port}/v1/logs (http)")
    records = []
    for request in server.requests:
        for rl in request.resource_logs:
            resource = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
            assert resource == {"service.name": ev.workload.service, "k8s.namespace.name": ev.workload.namespace}
            for sl in rl.scope_logs:
                assert sl.scope.name == "sloan"
                records.extend(sl.log_records)
    assert len(records) == n
    bodies = {"llm.slo.event": [], "llm.incident.attribution": []}
    for rec in records:
        doc = json.loads(rec.body.string_value)
        attributes = {kv.key: kv.value for kv in rec.attributes}
        name = attributes["event.name"].string_value
        assert rec.event_name == name
        assert attributes["slo.run.id"].string_value == "20261205T064135Z-faa9"
        validate("v1/slo-event" if name == "llm.slo.event" else "v1/incident-attribution", doc)
        # the document's time, to its microsecond (a window's end goes out to the ns)
        assert abs(rec.time_unix_nano - otlp_export._timestamp_ns(doc["timestamp"])) <= 1000
        if name == "llm.slo.event":
            assert rec.severity_text == ("INFO" if doc["status"] == "ok" else "WARN")
            assert attributes["slo.sli"].string_value == doc["sli_name"]
            assert rec.trace_id.hex() == doc.get("trace_id", "")
        else:
            assert rec.severity_text == "WARN"
            assert attributes["slo.fault_domain"].string_value == doc["predicted_fault_domain"]
        bodies[name].append(doc)
    def key(doc: dict) -> str:
        return json.dumps(doc, sort_keys=True)

    assert sorted(map(key, bodies["llm.slo.event"])) == sorted(map(key, events))
    assert sorted(map(key, bodies["llm.incident.attribution"])) == sorted(map(key, attributions))


# --- failures ---------------------------------------------------------------------------------


def test_an_unreachable_endpoint_is_one_line_and_exit_1(sloan):
    port = free_port()
    result = sloan("export", "otlp", "--runs", RUN, "--endpoint", f"http://127.0.0.1:{port}", "--timeout", 1,
                   "--signal", "traces")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: cannot export spans to http://127.0.0.1:{port}/v1/traces: [Errno 111] Connection refused",
        ("  check --endpoint and --protocol (OTLP receivers listen for http on port 4318, grpc on 4317); "
         "none of the 8,723 spans of run 20261205T064135Z-faa9 went out"),
    ]
    assert result.stdout == ""


def test_logs_to_a_receiver_of_traces_only_name_the_way_out(sloan):
    with receiver() as (r, got):
        result = sloan("export", "otlp", "--runs", RUN, "--endpoint", f"http://127.0.0.1:{r.http_port}",
                       "--batch-size", 10_000)
    assert result.exit_code == 1
    first, hint = result.stderr.splitlines()
    assert first == f"error: cannot export log records to http://127.0.0.1:{r.http_port}/v1/logs: HTTP 404 Not Found"
    assert hint.endswith("went out; a receiver of traces only (Tempo) takes no logs: pass --signal traces")
    assert got.table().num_rows == 0  # log records go first: no span went, none goes twice on the retry


@pytest.mark.parametrize("endpoint, protocol, insecure, expected", [
    ("http://localhost:4318", "http", False, ("http://localhost:4318", "http://localhost:4318/v1/logs", True)),
    ("https://otlp.example.com/v1/traces", "http", False,
     ("https://otlp.example.com", "https://otlp.example.com/v1/logs", False)),
    ("https://gw.example.com/otlp/", "http", False,
     ("https://gw.example.com/otlp", "https://gw.example.com/otlp/v1/logs", False)),
    ("localhost:4317", "grpc", False, ("https://localhost:4317", "https://localhost:4317", False)),
    ("localhost:4317", "grpc", True, ("http://localhost:4317", "http://localhost:4317", True)),
])
def test_endpoints(endpoint, protocol, insecure, expected):
    t = Target.parse(endpoint, protocol, insecure=insecure)
    assert (t.endpoint, t.url("logs"), t.insecure) == expected


@pytest.mark.parametrize("args, message", [
    (("ftp://x",), "endpoint 'ftp://x' is not an OTLP receiver's URL"),
    (("http://x:port",), "endpoint 'http://x:port' is not an OTLP receiver's URL"),
    (("https://x", "http", ["a=b"], True),
     "--insecure sends without TLS, but endpoint 'https://x' asks for TLS (https://)"),
    (("http://x", "http", ["novalue"]), "header 'novalue' is not KEY=VALUE"),
])
def test_bad_targets_say_what_is_wrong(args, message):
    with pytest.raises(ConfigError) as exc:
        Target.parse(*args)
    assert exc.value.message == message


def test_a_bad_header_is_a_usage_error(sloan, tmp_path):
    result = sloan("export", "otlp", "--runs", tmp_path, "--endpoint", "http://x", "--headers", "novalue")
    assert result.exit_code == 2
    assert "header 'novalue' is not KEY=VALUE" in result.stderr


@pytest.mark.parametrize("records, reason", [
    ([(30, ("Transient error HTTPConnectionPool(host='h', port=9): Max retries exceeded (Caused by "
            "NewConnectionError(\"HTTPConnection(host='h', port=9): Failed to establish a new connection: "
            "[Errno 111] Connection refused\")) encountered while exporting spans batch, retrying in 1.02s.")),
      (40, "Failed to export spans batch due to timeout, max retries or shutdown.")],
     "[Errno 111] Connection refused"),
    ([(30, ("Transient error HTTPConnectionPool(host='h', port=9): Max retries exceeded (Caused by "
            "NewConnectionError(\"HTTPConnection(host='h', port=9): Failed to establish a new connection: "
            "[Errno 111] Connection refused\")) encountered while exporting spans batch, retrying in 0.98s.")),
      (40, ("Failed to export spans batch code: None, reason: Attempted to set connect timeout to 0.0, but "
            "the timeout cannot be set to a value less than or equal to 0."))],
     "[Errno 111] Connection refused"),
    ([(40, ("Failed to export spans batch code: None, reason: Attempted to set connect timeout to 0.0, but "
            "the timeout cannot be set to a value less than or equal to 0."))],
     "no answer within the timeout, retries included"),
    ([(40, "Failed to export logs batch code: 404, reason: Not Found")], "HTTP 404 Not Found"),
    ([(40, "Failed to export traces to h:4317, error code: StatusCode.UNAUTHENTICATED, error details: bad token")],
     "gRPC UNAUTHENTICATED: bad token"),
    ([(40, "Failed to export spans batch due to timeout, max retries or shutdown.")],
     "no answer within the timeout, retries included"),
    ([], "the exporter gave no reason"),
])
def test_failure_reasons_are_one_line(records, reason):
    assert failure_reason(records) == reason


def test_export_error_is_a_sloerror():
    from runfmt.errors import SloError

    assert issubclass(ExportError, SloError)
