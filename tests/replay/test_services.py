"""The lab's services on loopback: each starts as `python -m replay.<name>`, prints
`ready`, answers, takes faults at run time and exits cleanly on SIGTERM.

No root needed. Every child process is killed in a finally block, and every
wait is bounded, so a broken service fails a test in seconds.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from replay import backend, gateway, retrieval
from replay.certs import make_self_signed
from replay.telemetry import setup_tracing

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
IO_TIMEOUT_S = 15.0
CHAT = "/v1/chat/completions"


# ------------------------------------------------------------ processes


class Service:
    """A lab service in a child process; lines after `ready` stay readable."""

    def __init__(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None],
                 reader: threading.Thread, stderr_path: Path) -> None:
        self.proc, self.lines, self.reader, self.stderr_path = proc, lines, reader, stderr_path
        ready = self.next_line()
        assert ready.startswith("ready "), f"expected 'ready HOST:PORT', got {ready!r}"
        self.host, _, port = ready.split()[1].rpartition(":")
        self.port = int(port)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=READY_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no output within {READY_TIMEOUT_S} s; stderr:\n"
                                 f"{self.stderr_path.read_text()}") from None
        assert line is not None, f"process exited early; stderr:\n{self.stderr_path.read_text()}"
        return line.rstrip("\n")

    def stop(self) -> int:
        """SIGTERM and the exit code (0 is a clean exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(IO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("service did not exit within 15 s of SIGTERM") from None


@contextmanager
def service(module: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            ) -> Iterator[Service]:
    stderr_path = tmp_path / f"{module}-{time.monotonic_ns()}.stderr"
    argv = [sys.executable, "-m", f"replay.{module}", "--listen", "127.0.0.1:0", *args]
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr,
                                stdin=subprocess.DEVNULL, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield Service(proc, lines, reader, stderr_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(IO_TIMEOUT_S)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("certs"))


# -------------------------------------------------------------- clients


def tls_context(cert_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert_path))


def request(port: int, path: str, body: Any, *, tls: ssl.SSLContext | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    if tls is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=IO_TIMEOUT_S)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=IO_TIMEOUT_S, context=tls)
    try:
        conn.request("POST" if body is not None else "GET", path,
                     body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def set_fault(port: int, fault: dict[str, Any], tls: ssl.SSLContext | None = None) -> None:
    status, _, data = request(port, "/admin/fault", fault, tls=tls)
    assert status == 200, data


def chat_body(stream: bool = True, max_tokens: int = 6, prompt_class: str = "chat_short",
              ) -> dict[str, Any]:
    return {"model": "lab-llm", "stream": stream, "max_tokens": max_tokens,
            "metadata": {"prompt_class": prompt_class},
            "messages": [{"role": "user", "content": "why is the first token late?"}]}


def sse_events(data: bytes) -> list[str]:
    return [line[len("data: "):] for line in data.decode().split("\n") if line.startswith("data: ")]


def stream_result(data: bytes) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(text, usage, lab draws) of an SSE answer that must end with [DONE]."""
    events = sse_events(data)
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    return text, chunks[-1]["usage"], chunks[-1]["lab"]


# -------------------------------------------------------------- backend


def test_backend_streams_deterministic_answers(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    tls = tls_context(cert[0])
    with service("backend", tmp_path, "--cert", str(cert[0]), "--key", str(cert[1])) as svc:
        answers: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        # r-2 in between: the draws of r-1 must not depend on arrival order
        for rid in ("r-1", "r-2", "r-1"):
            start = time.monotonic()
            status, headers, data = request(svc.port, CHAT, chat_body(), tls=tls,
                                            headers={"x-request-id": rid})
            elapsed = time.monotonic() - start
            assert status == 200 and headers["Content-Type"] == "text/event-stream"
            text, usage, lab = stream_result(data)
            assert usage["completion_tokens"] == 6 == len(text.split())
            # really slept: the wall time cannot be shorter than the drawn schedule
            assert elapsed >= lab["ttft_s"] + lab["gaps_s_total"]
            answers.setdefault(rid, []).append((text, lab))
        assert answers["r-1"][0] == answers["r-1"][1]
        assert answers["r-1"][0][1]["schedule_sha256"] != answers["r-2"][0][1]["schedule_sha256"]
        # what the service reports is the plan the module draws
        assert answers["r-1"][0][1] == backend.draw_plan(42, "r-1", "chat_short", 6).summary()

        status, _, data = request(svc.port, CHAT, chat_body(stream=False), tls=tls,
                                  headers={"x-request-id": "r-1"})
        answer = json.loads(data)
        assert status == 200
        assert answer["choices"][0]["message"]["content"] == answers["r-1"][0][0]
        assert answer["usage"]["completion_tokens"] == 6
        assert svc.stop() == 0


def test_backend_prompt_classes_differ_and_unknown_is_rejected() -> None:
    medians = {name: sorted(backend.draw_plan(42, f"q{i}", name).ttft_s for i in range(201))[100]
               for name in backend.PROFILES}
    assert medians["chat_short"] < medians["rag_medium"] < medians["context_long"]
    assert 0.10 < medians["chat_short"] < 0.22
    gaps = [g for i in range(20) for g in backend.draw_plan(1, f"g{i}", "chat_short").gaps_s]
    assert 0.015 <= min(gaps) and max(gaps) <= 0.030
    with pytest.raises(ValueError, match="unknown prompt class 'huge'"):
        backend.parse_request(json.dumps({"messages": [], "metadata": {"prompt_class": "huge"}})
                              .encode(), {})


def test_backend_faults(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    tls = tls_context(cert[0])
    with service("backend", tmp_path, "--cert", str(cert[0]), "--key", str(cert[1])) as svc:
        set_fault(svc.port, {"kind": "throttle", "retry_after_s": 1, "fraction": 1.0}, tls)
        status, headers, _ = request(svc.port, CHAT, chat_body(max_tokens=2), tls=tls)
        assert status == 429 and headers["Retry-After"] == "1"

        set_fault(svc.port, {"kind": "error", "fraction": 1.0}, tls)
        status, _, _ = request(svc.port, CHAT, chat_body(max_tokens=2), tls=tls)
        assert status == 500

        status, _, data = request(svc.port, "/admin/fault", {"kind": "melt"}, tls=tls)
        assert status == 400 and b"unknown fault kind 'melt'" in data

        set_fault(svc.port, {"kind": "tls_delay", "ms": 300}, tls)
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", svc.port), timeout=IO_TIMEOUT_S) as raw:
            with tls.wrap_socket(raw, server_hostname="127.0.0.1"):
                handshake_s = time.monotonic() - start
        assert handshake_s >= 0.3

        set_fault(svc.port, {"kind": "none"}, tls)
        status, _, data = request(svc.port, "/healthz", None, tls=tls)
        assert status == 200 and json.loads(data)["fault"] == {"kind": "none"}
        status, _, _ = request(svc.port, CHAT, chat_body(max_tokens=2), tls=tls)
        assert status == 200
        assert svc.stop() == 0


# ------------------------------------------------------------ retrieval


def test_retrieval_latency_and_slowdown(tmp_path: Path) -> None:
    with service("retrieval", tmp_path) as svc:
        query = {"query": "why is the first token late?", "k": 3}
        start = time.monotonic()
        status, _, data = request(svc.port, "/retrieve", query, headers={"x-request-id": "q-1"})
        elapsed = time.monotonic() - start
        answer = json.loads(data)
        assert status == 200 and len(answer["documents"]) == 3
        assert answer["latency_ms"] == pytest.approx(retrieval.draw_latency_s(42, "q-1") * 1000,
                                                     abs=0.001)
        assert elapsed * 1000 >= answer["latency_ms"]

        set_fault(svc.port, {"kind": "slowdown", "extra_ms": 400})
        start = time.monotonic()
        status, _, data = request(svc.port, "/retrieve", query, headers={"x-request-id": "q-1"})
        assert status == 200 and time.monotonic() - start >= 0.4
        assert json.loads(data)["documents"] == answer["documents"]
        assert svc.stop() == 0


# ------------------------------------------------------------------ DNS


def dns_query(port: int, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    packet = DNSRecord.question(name, qtype).send("127.0.0.1", port, tcp=tcp, timeout=5)
    return DNSRecord.parse(packet)


def test_dns_answers_and_delay(tmp_path: Path) -> None:
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps({"retrieval.lab": "198.18.100.12"}))
    with service("dnsserver", tmp_path, "--zone", str(zone), "--record", "backend.lab=fd00::13",
                 "--admin", "127.0.0.1:0") as svc:
        admin_port = int(svc.next_line().rpartition(":")[2])

        reply = dns_query(svc.port, "retrieval.lab")
        assert reply.header.rcode == RCODE.NOERROR
        assert [(QTYPE[r.rtype], str(r.rdata)) for r in reply.rr] == [("A", "198.18.100.12")]
        reply = dns_query(svc.port, "Retrieval.LAB.", tcp=True)
        assert [str(r.rdata) for r in reply.rr] == ["198.18.100.12"]
        reply = dns_query(svc.port, "retrieval.lab", "AAAA")
        assert reply.header.rcode == RCODE.NOERROR and reply.rr == []
        reply = dns_query(svc.port, "backend.lab", "AAAA")
        assert [str(r.rdata) for r in reply.rr] == ["fd00::13"]
        assert dns_query(svc.port, "nowhere.lab").header.rcode == RCODE.NXDOMAIN

        set_fault(admin_port, {"kind": "delay", "ms": 300})
        # three queries at once: each takes the delay, none waits for another
        results: list[float] = []

        def timed() -> None:
            start = time.monotonic()
            dns_query(svc.port, "retrieval.lab")
            results.append(time.monotonic() - start)

        start = time.monotonic()
        threads = [threading.Thread(target=timed) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT_S)
        assert len(results) == 3 and min(results) >= 0.3
        assert time.monotonic() - start < 0.8  # one after another would take 0.9 s
        assert svc.stop() == 0


# -------------------------------------------------------------- gateway


@contextmanager
def rag_lab(tmp_path: Path, cert: tuple[Path, Path], *gateway_args: str,
            ) -> Iterator[tuple[Service, Service, Service]]:
    with service("backend", tmp_path, "--cert", str(cert[0]), "--key", str(cert[1])) as be, \
            service("retrieval", tmp_path) as rt, \
            service("gateway", tmp_path,
                    "--retrieval-url", f"http://localhost:{rt.port}",
                    "--backend-url", f"https://localhost:{be.port}",
                    "--backend-ca", str(cert[0]), *gateway_args) as gw:
        yield be, rt, gw


def test_gateway_streams_and_retries(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    tls = tls_context(cert[0])
    args = ("--max-attempts", "3", "--retry-after-cap-s", "0.2", "--backoff-base-ms", "20")
    with rag_lab(tmp_path, cert, *args) as (be, _rt, gw):
        status, headers, data = request(gw.port, CHAT, chat_body(max_tokens=8),
                                        headers={"x-request-id": "g-1"})
        assert status == 200 and headers["x-lab-attempts"] == "1"
        text, usage, lab = stream_result(data)
        assert usage["completion_tokens"] == 8
        # the gateway adds retrieved context but the answer is the backend's for this id
        _, _, direct = request(be.port, CHAT, chat_body(max_tokens=8), tls=tls,
                               headers={"x-request-id": "g-1"})
        assert (text, lab) == stream_result(direct)[::2]

        set_fault(be.port, {"kind": "throttle", "retry_after_s": 1, "count": 1}, tls)
        start = time.monotonic()
        status, headers, data = request(gw.port, CHAT, chat_body(max_tokens=3),
                                        headers={"x-request-id": "g-2"})
        assert status == 200 and headers["x-lab-attempts"] == "2"
        assert time.monotonic() - start >= 0.2  # Retry-After, capped
        assert len(stream_result(data)[0].split()) == 3

        set_fault(be.port, {"kind": "throttle", "retry_after_s": 0}, tls)
        status, headers, data = request(gw.port, CHAT, chat_body(max_tokens=3),
                                        headers={"x-request-id": "g-3"})
        assert status == 429 and headers["x-lab-attempts"] == "3"

        set_fault(be.port, {"kind": "error", "fraction": 1.0, "count": 1}, tls)
        status, headers, data = request(gw.port, CHAT, chat_body(stream=False, max_tokens=3),
                                        headers={"x-request-id": "g-4"})
        assert status == 200 and headers["x-lab-attempts"] == "2"
        assert json.loads(data)["usage"]["completion_tokens"] == 3
        assert gw.stop() == 0


def test_gateway_reports_unreachable_retrieval(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    with service("gateway", tmp_path, "--retrieval-url", f"http://127.0.0.1:{closed_port}",
                 "--backend-url", "https://127.0.0.1:1", "--backend-ca", str(cert[0])) as gw:
        status, _, data = request(gw.port, CHAT, chat_body())
        assert status == 502 and b"retrieval failed" in data


# ---------------------------------------------------------------- spans


def test_spans_join_across_services(tmp_path: Path, cert: tuple[Path, Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: one trace from gateway to backend, with the connection tuple."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    monkeypatch.setenv("LAB_POD", "gateway-0")
    monkeypatch.setenv("LAB_NAMESPACE", "lab")
    exporter = InMemorySpanExporter()
    provider = setup_tracing("rag-gateway", None)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    be = backend.make_server(("127.0.0.1", 0), seed=42, provider=provider, cert=cert[0],
                             key=cert[1], config=backend.BackendConfig("lab-llm", 0.0))
    rt = retrieval.make_server(("127.0.0.1", 0), seed=42, provider=provider,
                               config=retrieval.RetrievalConfig(0.0))
    config = gateway.GatewayConfig(
        retrieval=gateway.Upstream.parse(f"http://localhost:{rt.server_address[1]}"),
        backend=gateway.Upstream.parse(f"https://localhost:{be.server_address[1]}"),
        backend_tls=tls_context(cert[0]))
    gw = gateway.make_server(("127.0.0.1", 0), seed=42, provider=provider, config=config)
    servers = [be, rt, gw]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        status, _, data = request(gw.server_address[1], CHAT, chat_body(max_tokens=4),
                                  headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
        assert status == 200
        stream_result(data)
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        provider.shutdown()
    finished = exporter.get_finished_spans()
    spans = {s.name: s for s in finished}
    assert {"POST /v1/chat/completions", "resolve localhost", "POST /retrieve",
            "chat lab-llm"} <= set(spans)

    def sid(span: Any) -> int:
        return int(span.get_span_context().span_id)

    def tid(span: Any) -> int:
        return int(span.get_span_context().trace_id)

    assert {tid(s) for s in finished} == {int("ab" * 16, 16)}  # one trace, client to model
    parent_of = {sid(s): s.parent.span_id if s.parent else None for s in finished}
    attrs: dict[int, dict[str, Any]] = {sid(s): dict(s.attributes or {}) for s in finished}

    gw_server = spans["POST /v1/chat/completions"]
    assert parent_of[sid(gw_server)] == int("cd" * 8, 16)
    assert gw_server.resource.attributes["k8s.pod.name"] == "gateway-0"
    assert gw_server.resource.attributes["k8s.namespace.name"] == "lab"
    assert attrs[sid(gw_server)]["process.pid"] == os.getpid()
    assert attrs[sid(gw_server)]["thread.id"] > 0

    # each CLIENT span's local port is its SERVER span's peer port: the tuple joins them
    server_of = {parent_of[sid(s)]: sid(s) for s in finished if s.kind.name == "SERVER"}
    clients = [sid(s) for s in finished if s.kind.name == "CLIENT"]
    assert len(clients) == 2
    for client in clients:
        server = attrs[server_of[client]]
        assert attrs[client]["network.local.port"] == server["network.peer.port"]
        assert attrs[client]["client.port"] == server["client.port"]
        assert attrs[client]["network.peer.port"] == server["network.local.port"]
        assert attrs[client]["server.address"] == "localhost"
    # the backend's SERVER span is named "chat lab-llm" too: the gateway's is the CLIENT one
    generation = next(sid(s) for s in finished if s.name == "chat lab-llm" and s.kind.name == "CLIENT")
    assert attrs[generation]["http.request.resend_count"] == 0
    assert attrs[generation]["gen_ai.usage.output_tokens"] == 4
    model = attrs[server_of[generation]]
    assert model["gen_ai.operation.name"] == "chat" and model["gen_ai.provider.name"] == "lab"
    assert model["gen_ai.response.time_to_first_chunk"] >= 0
    assert attrs[generation]["gen_ai.response.time_to_first_chunk"] >= 0


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_spans_leave_over_otlp_http(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    collector = HTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.bodies = []
    thread = threading.Thread(target=collector.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    try:
        with service("retrieval", tmp_path, "--otlp-endpoint", endpoint, "--time-scale", "0",
                     env={"LAB_POD": "retrieval-0", "LAB_NAMESPACE": "lab"}) as svc:
            status, _, _ = request(svc.port, "/retrieve", {"query": "q", "k": 1})
            assert status == 200
            assert svc.stop() == 0  # shutdown flushes the batch
            pid = svc.proc.pid
    finally:
        collector.shutdown()
        collector.server_close()
    spans = []
    for body in _Collector.bodies:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            resource = {kv.key: kv.value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                spans += [(resource, span) for span in ss.spans]
    assert len(spans) == 1
    resource, span = spans[0]
    assert resource["service.name"].string_value == "retrieval"
    assert resource["k8s.pod.name"].string_value == "retrieval-0"
    assert resource["process.pid"].int_value == pid
    attributes = {kv.key: kv.value for kv in span.attributes}
    assert span.name == "POST /retrieve" and attributes["process.pid"].int_value == pid


def test_backend_weights_are_mapped_resident_and_leave_no_file(tmp_path):
    import random

    from replay.backend import PAGE, Weights

    path = tmp_path / "weights.bin"
    w = Weights(path, 2, pages_per_token=4)
    assert not path.exists()  # the mapping holds the pages; nothing is left behind
    assert w.pages == (2 << 20) // PAGE
    assert w.read(random.Random(1)) == w.read(random.Random(1)) == 4 * 0x5A
