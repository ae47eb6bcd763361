#!/usr/bin/env python3
"""CPU per OTLP export request: flattening at intake (before) against raw intake (now).

The bodies are the lab's: the spans of one chat request through the lab (gateway server
span, two DNS resolutions, the retrieval call and the LLM call, the DNS server's four
queries, the retrieval and backend server spans; the lab's attributes and resources, as
in datasets/labeled), made with the OpenTelemetry SDK and encoded by its OTLP exporter's
encoder, each service's spans exported in requests of --spans-per-request (the lab's
recorder took 8,723 spans in 171 requests: ~51 each).

Timed on the same bodies, CPU µs per request and per span (median of --rounds):

  before   what the receiver did per request while recording, until now: parse,
           flatten to Arrow (capture/spans.py flatten), the tables added to the spans
           and span_resources part writers; and, apart, writing those parts
  intake   what it does now: parse, check the ids (capture/spans.py check_request), keep
           the request; its otlp_raw row is made with the part's others (capture/
           span_flatten.py raw_table); and, apart, writing the otlp_raw parts
  flatten  after the recording: capture/span_flatten.py flatten_raw over those otlp_raw
           parts (read, parse, flatten, span parts written, raw parts removed)

--http also posts the bodies to a real OtlpReceiver over HTTP (as `slocap record` stores
them) and prints its own intake_cpu_s per request: the handler thread's whole CPU
(body read, parse, check, request kept), the figure the manifest gives as
otlp.intake_us_per_request.

    .venv/bin/python bench/otlp_intake.py [--requests 200] [--spans-per-request 50] [--http]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from capture.otlp import PROTOBUF, OtlpReceiver, RawRequest, parse_request
from capture.span_flatten import flatten_raw, raw_table
from capture.spans import DEFAULT_LIMITS, check_request, flatten
from runfmt.writer import RunWriters

SERVICES = {  # service -> (pod, scope): the lab's (replay/)
    "rag-gateway": ("gateway-9cf7fa27f5", "replay"),
    "lab-dns": ("dns-b53bd73d5c", "replay.dns"),
    "retrieval": ("retrieval-4b1c2d3e4f", "replay"),
    "llm-backend": ("backend-7a8b9c0d1e", "replay"),
}
BIG_PARTS = 1 << 30  # rows: parts are closed by the bench, not by the writers' row limit


def _providers() -> dict[str, tuple[TracerProvider, InMemorySpanExporter]]:
    out = {}
    for pid, (service, (pod, _scope)) in enumerate(SERVICES.items(), start=9050):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({
            "service.name": service, "host.name": "vm", "process.pid": pid, "k8s.pod.name": pod,
            "k8s.namespace.name": "llm-lab"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        out[service] = (provider, exporter)
    return out


def _lab_spans(chats: int, seed: int = 42) -> dict[str, list]:
    """The SDK's spans of `chats` chat requests through the lab, per service."""
    rng = random.Random(seed)
    providers = _providers()
    tracer = {s: p.get_tracer(SERVICES[s][1]) for s, (p, _) in providers.items()}
    pid = {s: p.resource.attributes["process.pid"] for s, (p, _) in providers.items()}
    for seq in range(chats):
        rid = f"42-{seq:06d}"
        gw = tracer["rag-gateway"]
        with gw.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER, attributes={
                "http.request.method": "POST", "url.path": "/v1/chat/completions", "server.port": 8080,
                "network.peer.address": "198.18.100.1", "network.peer.port": rng.randrange(32768, 61000),
                "client.address": "198.18.100.1", "client.port": rng.randrange(32768, 61000),
                "network.local.address": "198.18.100.14", "network.local.port": 8080, "network.transport": "tcp",
                "http.route": "/v1/chat/completions", "process.pid": pid["rag-gateway"], "thread.id": 14449,
                "lab.request_id": rid, "lab.prompt_class": rng.choice(["chat_short", "rag_long", "chat_long"])}) as root:
            for host, port, answer in (("retrieval.lab", 8081, "198.18.100.12"), ("backend.lab", 8443, "198.18.100.13")):
                with gw.start_as_current_span(f"resolve {host}", attributes={
                        "server.address": host, "server.port": port, "process.pid": pid["rag-gateway"],
                        "thread.id": 14449, "lab.dns.answers": [answer]}):
                    for qtype in ("A", "AAAA"):
                        with tracer["lab-dns"].start_as_current_span("dns query", kind=SpanKind.SERVER, attributes={
                                "dns.question.name": host, "dns.question.type": qtype, "network.transport": "udp",
                                "client.address": "198.18.100.14", "client.port": rng.randrange(32768, 61000),
                                "process.pid": pid["lab-dns"], "thread.id": 11808,
                                "dns.response_code": "NOERROR", "lab.answers": int(qtype == "A")}):
                            pass
            local = rng.randrange(32768, 61000)
            with gw.start_as_current_span("POST /retrieve", kind=SpanKind.CLIENT, attributes={
                    "http.request.method": "POST", "url.full": "http://retrieval.lab:8081/retrieve",
                    "server.address": "retrieval.lab", "server.port": 8081, "network.peer.address": "198.18.100.12",
                    "network.peer.port": 8081, "client.address": "198.18.100.14", "client.port": local,
                    "network.transport": "tcp", "network.type": "ipv4", "network.local.address": "198.18.100.14",
                    "network.local.port": local, "process.pid": pid["rag-gateway"], "thread.id": 14449,
                    "http.response.status_code": 200, "lab.retrieval.documents": 4}):
                with tracer["retrieval"].start_as_current_span("POST /retrieve", kind=SpanKind.SERVER, attributes={
                        "http.request.method": "POST", "url.path": "/retrieve", "server.port": 8081,
                        "client.address": "198.18.100.14", "client.port": local, "process.pid": pid["retrieval"],
                        "http.response.status_code": 200, "lab.documents": 4}):
                    pass
            local = rng.randrange(32768, 61000)
            tokens = rng.randrange(40, 400)
            with gw.start_as_current_span("chat lab-model", kind=SpanKind.CLIENT, attributes={
                    "gen_ai.provider.name": "lab", "gen_ai.operation.name": "chat", "gen_ai.request.model": "lab-model",
                    "gen_ai.request.stream": True, "http.request.method": "POST", "http.request.resend_count": 0,
                    "url.full": "https://backend.lab:8443/v1/chat/completions", "server.address": "backend.lab",
                    "server.port": 8443, "network.peer.address": "198.18.100.13", "network.peer.port": 8443,
                    "client.address": "198.18.100.14", "client.port": local, "network.transport": "tcp",
                    "network.type": "ipv4", "network.local.address": "198.18.100.14", "network.local.port": local,
                    "process.pid": pid["rag-gateway"], "thread.id": 14449, "lab.request_id": rid, "lab.attempt": 1,
                    "lab.tls.handshake_s": rng.uniform(0.002, 0.006)}) as chat:
                with tracer["llm-backend"].start_as_current_span("chat lab-model", kind=SpanKind.SERVER, attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.request.model": "lab-model",
                        "gen_ai.response.model": "lab-llm", "gen_ai.usage.input_tokens": tokens,
                        "gen_ai.usage.output_tokens": tokens // 5, "server.port": 8443,
                        "client.address": "198.18.100.14", "client.port": local, "process.pid": pid["llm-backend"],
                        "gen_ai.server.time_to_first_token": rng.uniform(0.05, 0.3)}):
                    pass
                chat.set_attributes({"gen_ai.response.model": "lab-llm", "gen_ai.usage.input_tokens": tokens,
                                     "gen_ai.usage.output_tokens": tokens // 5, "http.response.status_code": 200,
                                     "gen_ai.response.time_to_first_chunk": rng.uniform(0.05, 0.3)})
            root.set_attributes({"http.response.status_code": 200, "lab.attempts": 1, "lab.backoff_s": 0.0})
    return {s: list(e.get_finished_spans()) for s, (_, e) in providers.items()}


def lab_bodies(requests: int, per_request: int) -> list[bytes]:
    """`requests` export bodies of the lab's spans, each service's in exports of `per_request`."""
    chats = max(1, requests * per_request // 11 + 1)  # 11 spans per chat request
    by_service = _lab_spans(chats)
    bodies = []
    for spans in by_service.values():
        for i in range(0, len(spans), per_request):
            bodies.append(encode_spans(spans[i:i + per_request]).SerializeToString())
    random.Random(7).shuffle(bodies)  # the services' exports arrive interleaved
    return bodies[:requests]


def _cpu(work: Callable[[], None]) -> float:
    """CPU seconds of work() in this process (Arrow's threads too)."""
    t0 = time.process_time()
    work()
    return time.process_time() - t0


def _before(bodies: list[bytes], writers: RunWriters) -> None:
    """The receiver's work per request until now: parse, flatten to Arrow, tables to the writers."""
    for body in bodies:
        flat = flatten(parse_request(body, PROTOBUF), DEFAULT_LIMITS)
        writers["span_resources"].add(flat.resources)
        writers["spans"].add(flat.spans)


def _intake(bodies: list[bytes], writers: RunWriters) -> None:
    """Its work now: parse, check the ids, keep the request; its otlp_raw row is made with
    the part's others (capture/recorder.py)."""
    taken = []
    for body in bodies:
        n = check_request(parse_request(body, PROTOBUF))
        taken.append(RawRequest("http", PROTOBUF, time.time_ns(), body, n))
    writers["otlp_raw"].add(raw_table(taken))


def _round(bodies: list[bytes], run_dir: Path) -> dict[str, float]:
    """CPU seconds of each step over all the bodies, once."""
    before = RunWriters(run_dir / "before", max_rows=BIG_PARTS, max_seconds=1e9)
    now = RunWriters(run_dir / "now", max_rows=BIG_PARTS, max_seconds=1e9)
    return {
        "before": _cpu(lambda: _before(bodies, before)),
        "before_parts": _cpu(lambda: before.flush("spans", "span_resources")),
        "intake": _cpu(lambda: _intake(bodies, now)),
        "intake_parts": _cpu(lambda: now.flush("otlp_raw")),
        "flatten": _cpu(lambda: flatten_raw(run_dir / "now", now["spans"], now["span_resources"])),
    }


def measure(bodies: list[bytes], rounds: int) -> dict[str, list[float]]:
    """Per round, CPU seconds of each step over all the bodies."""
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="otlp-intake-") as tmp:
            for step, seconds in _round(bodies, Path(tmp)).items():
                out.setdefault(step, []).append(seconds)
    return out


def over_http(bodies: list[bytes]) -> tuple[float, int]:
    """A real receiver storing raw rows as the recorder does: its intake CPU, requests taken."""
    with tempfile.TemporaryDirectory(prefix="otlp-intake-http-") as tmp:
        writers = RunWriters(Path(tmp), max_rows=200_000, max_seconds=10)
        lock = threading.Lock()

        taken: list[RawRequest] = []

        def on_request(r: RawRequest) -> None:
            with lock:
                taken.append(r)

        receiver = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", 4 << 20, on_request)
        receiver.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=30)
            for body in itertools.chain(bodies[:5], bodies):  # the first few warm the handler up
                conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": PROTOBUF})
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
            conn.close()
        finally:
            receiver.stop()
        writers["otlp_raw"].add(raw_table(taken))
        writers.flush("otlp_raw")
        c = receiver.counters
        return c.intake_cpu_s, c.requests_ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--spans-per-request", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--http", action="store_true", help="also through a real OtlpReceiver over HTTP")
    a = ap.parse_args(argv)
    bodies = lab_bodies(a.requests, a.spans_per_request)
    spans = sum(check_request(parse_request(b, PROTOBUF)) for b in bodies)
    n = len(bodies)
    print(f"{n} export requests of the lab's spans, {spans:,} spans ({spans / n:.1f} per request), "
          f"{sum(map(len, bodies)) / n / 1024:.1f} KiB per body; median of {a.rounds} rounds, CPU")
    m = {k: statistics.median(v) for k, v in measure(bodies, a.rounds).items()}

    def row(label: str, seconds: float) -> str:
        return f"  {label:<46} {seconds * 1e6 / n:9.1f} µs/request {seconds * 1e6 / spans:7.2f} µs/span"

    print(row("before: parse + flatten + Arrow, at intake", m["before"]))
    print(row("        + spans/span_resources parts written", m["before_parts"]))
    print(row("now:    parse + check ids + rows per part, intake", m["intake"]))
    print(row("        + otlp_raw parts written", m["intake_parts"]))
    print(row("after the recording: flatten_raw", m["flatten"]))
    print(f"  intake per request: {m['before'] / m['intake']:.1f}x less CPU than before "
          f"({(m['before'] + m['before_parts']) / (m['intake'] + m['intake_parts']):.1f}x with the parts); "
          f"intake + flatten: {(m['intake'] + m['intake_parts'] + m['flatten']) / (m['before'] + m['before_parts']):.2f}"
          f"x the CPU of before in all")
    if a.http:
        cpu, taken = over_http(bodies)
        print(f"  through OtlpReceiver over HTTP: intake_cpu_s {cpu:.3f} s for {taken} requests: "
              f"{cpu * 1e6 / taken:.1f} µs/request (handler thread: body read, parse, check, request kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
