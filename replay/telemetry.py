"""What every lab service shares: tracing, and the small server plumbing around it.

Tracing: `setup_tracing` builds a TracerProvider whose spans carry the thread and
process that did the work, go to the recorder over OTLP/HTTP, and are published
to the kernel per thread (capture.tracing), so the dns, connect and tls events of
a request's thread carry its trace_id/span_id.

Plumbing: the options every service takes (--listen, --seed, --otlp-endpoint,
--service-name), a threaded HTTP/1.1 server with GET /healthz and
POST /admin/fault, the `ready HOST:PORT` line the runner waits for, clean exit on
SIGTERM/SIGINT, and seeded random streams that depend only on (seed, key), never
on arrival order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "FaultSpec",
    "Faults",
    "LabHTTPServer",
    "LabHandler",
    "ThreadAttributesProcessor",
    "add_service_options",
    "configure_logging",
    "extract_context",
    "fault_spec",
    "format_hostport",
    "inject_context",
    "parse_hostport",
    "pseudo_words",
    "request_id_of",
    "run_until_signal",
    "seeded_rng",
    "setup_tracing",
    "socket_attributes",
]

log = logging.getLogger("replay")

# ---------------------------------------------------------------- tracing


class ThreadAttributesProcessor(SpanProcessor):
    """Puts thread.id and process.pid on every span: the pod+pid correlation
    tier joins on them when a kernel event carries no trace_id."""

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        span.set_attribute("thread.id", threading.get_native_id())
        span.set_attribute("process.pid", os.getpid())

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _resource(service_name: str) -> Resource:
    attrs: dict[str, Any] = {
        "service.name": service_name,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
    }
    # the lab runner names the "pod" a service plays, as a kubelet would
    for env, key in (("LAB_POD", "k8s.pod.name"), ("LAB_NAMESPACE", "k8s.namespace.name")):
        if os.environ.get(env):
            attrs[key] = os.environ[env]
    return Resource.create(attrs)


def setup_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """A provider for one service; spans are exported only when an endpoint is given.

    The provider is not installed globally: each service passes it around, so
    tests can run several in one process.
    """
    provider = TracerProvider(resource=_resource(service_name))
    provider.add_span_processor(ThreadAttributesProcessor())
    try:
        from capture.tracing import KernelTraceContextProcessor
        from runfmt.errors import CaptureError

        try:
            provider.add_span_processor(KernelTraceContextProcessor())
        except CaptureError as exc:
            log.warning("kernel trace stamping off: %s", exc)
    except ImportError as exc:  # a lab host without the capture package
        log.warning("kernel trace stamping off: %s", exc)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        # a short delay keeps spans inside short runs; a short timeout keeps
        # shutdown quick when the recorder is already gone
        exporter = OTLPSpanExporter(endpoint=otlp_endpoint, timeout=5)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    return provider


def extract_context(headers: Mapping[str, str] | Any) -> Context:
    """The W3C trace context of an incoming request (an email.message headers object works)."""
    return propagate.extract(headers)


def inject_context(headers: dict[str, str]) -> dict[str, str]:
    """Adds traceparent (and tracestate) of the current span to outgoing headers."""
    propagate.inject(headers)
    return headers


def socket_attributes(sock: socket.socket) -> dict[str, Any]:
    """The connection tuple of a client's socket, so the analyzer can join a CLIENT
    span with the kernel's connect/retransmit events. client.* repeats the local
    end: on every span, client.* is then the client end of the connection."""
    local, peer = sock.getsockname(), sock.getpeername()
    return {
        "network.transport": "tcp",
        "network.type": "ipv6" if sock.family == socket.AF_INET6 else "ipv4",
        "network.local.address": local[0],
        "network.local.port": local[1],
        "network.peer.address": peer[0],
        "network.peer.port": peer[1],
        "client.address": local[0],
        "client.port": local[1],
    }


# ------------------------------------------------------------ determinism

_WORDS = (
    "latency token stream kernel socket packet queue thread span trace signal "
    "model prompt answer context window cache vector index shard replica leader "
    "quorum commit buffer frame header route gateway backend retrieve embed rank "
    "score budget error retry backoff jitter timeout deadline burst steady spike "
    "node pod cgroup namespace probe hook map ring event record sample slice "
    "median tail quantile mean drift noise seed phase fault label"
).split()


def seeded_rng(seed: int, *key: object) -> random.Random:
    """A random stream fixed by (seed, key). Python's hash() of a str changes per
    process, so the key goes through sha256 instead."""
    text = "\x1f".join([str(seed), *map(str, key)])
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


def pseudo_words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(_WORDS) for _ in range(n)]


def request_id_of(headers: Mapping[str, str] | Any, body: bytes) -> str:
    """x-request-id when the caller sent one, else a digest of the body, so a
    repeated request draws the same numbers either way."""
    rid = headers.get("x-request-id")
    return rid if rid else "body-" + hashlib.sha256(body).hexdigest()[:16]


# ------------------------------------------------------------------ faults

FaultSpec = Callable[[dict[str, Any]], dict[str, Any]]


def _number(body: Mapping[str, Any], name: str, default: float | None = None,
            lo: float = 0.0, hi: float = float("inf")) -> float:
    value = body.get(name, default)
    if value is None:
        raise ValueError(f"fault field {name!r} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"fault field {name!r} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"fault field {name!r} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


def fault_spec(**fields: tuple[float | None, float, float]) -> FaultSpec:
    """A validator for one fault kind: field name -> (default or None if required, lo, hi)."""

    def check(body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - set(fields) - {"kind"}
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)} for kind {body['kind']!r}")
        out: dict[str, Any] = {"kind": body["kind"]}
        for name, (default, lo, hi) in fields.items():
            out[name] = _number(body, name, default, lo, hi)
        return out

    return check


class Faults:
    """The one active fault of a service; each POST /admin/fault replaces it."""

    def __init__(self, kinds: Mapping[str, FaultSpec]) -> None:
        self._kinds = dict(kinds)
        self._lock = threading.Lock()
        self._active: dict[str, Any] = {"kind": "none"}

    def set(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            raise ValueError('a fault is a JSON object with a "kind"')
        kind = body["kind"]
        if kind == "none":
            fault: dict[str, Any] = {"kind": "none"}
        elif kind in self._kinds:
            fault = self._kinds[kind](body)
        else:
            raise ValueError(f"unknown fault kind {kind!r}; this service knows "
                             f"{sorted(['none', *self._kinds])}")
        with self._lock:
            self._active = fault
        log.info("fault now %s", fault)
        return fault

    def current(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._active)

    def get(self, kind: str) -> dict[str, Any] | None:
        fault = self.current()
        return fault if fault["kind"] == kind else None

    def hit(self, kind: str, decide: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The active fault of `kind` when `decide(fault)` says it hits this request.

        A fault with a positive "count" clears itself after that many hits, so a
        test or scenario can throttle exactly the next N requests.
        """
        with self._lock:
            fault = self._active
            if fault["kind"] != kind or not decide(fault):
                return None
            hit = dict(fault)
            if fault.get("count", 0) > 0:
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self._active = {"kind": "none"}
            return hit


# ---------------------------------------------------------- HTTP plumbing


def parse_hostport(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080' or ':8080' (all IPv4 addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def service_parser(module: str, doc: str | None, service_name: str) -> argparse.ArgumentParser:
    """The command line every lab service starts from (`python -m MODULE`); its own
    options are added after."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_service_options(parser, service_name)
    return parser


def add_service_options(parser: argparse.ArgumentParser, service_name: str) -> None:
    parser.add_argument("--listen", type=parse_hostport, required=True, metavar="HOST:PORT",
                        help="address to listen on; port 0 lets the kernel choose")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--otlp-endpoint", default=None, metavar="URL",
                        help="OTLP/HTTP traces endpoint, e.g. http://198.18.100.1:4318/v1/traces")
    parser.add_argument("--service-name", default=service_name)
    parser.add_argument("--log-level", default="WARNING")


def format_hostport(addr: tuple[Any, ...]) -> str:
    host = addr[0]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class LabHTTPServer(ThreadingHTTPServer):
    """A thread per connection; optionally TLS with the handshake done in that
    thread, where a `tls_delay` fault can stall it without blocking accept()."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512  # the gateway opens a new connection per request

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 faults: Faults, provider: TracerProvider, seed: int,
                 tls: ssl.SSLContext | None = None, tls_delay: Callable[[], float] | None = None,
                 config: Any = None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.faults = faults
        self.provider = provider
        self.tracer = provider.get_tracer("replay")
        self.seed = seed
        self.tls = tls
        self.tls_delay = tls_delay
        self.config = config
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse lookup that would
        # show up as DNS traffic in a lab netns; the name is not needed
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # headers and body go out in separate writes; with Nagle on, the second
        # waits for a delayed ACK (~40 ms on loopback), as in any unset server
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            delay = self.tls_delay() if self.tls_delay else 0.0
            request.settimeout(30)
            if delay > 0:
                time.sleep(delay)  # the client's SSL_do_handshake waits this long
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                log.info("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.info("connection from %s ended: %s", client_address, exc)
        else:
            super().handle_error(request, client_address)


class LabHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; /healthz and /admin/fault here, service routes in `routes`."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection frees its thread after this
    server: LabHTTPServer
    routes: ClassVar[Mapping[tuple[str, str], str]] = {}

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if method == "GET" and path == "/healthz":
            self.send_json(200, {"status": "ok", "fault": self.server.faults.current()})
        elif method == "POST" and path == "/admin/fault":
            try:
                fault = self.server.faults.set(json.loads(self.read_body() or b"null"))
            except ValueError as exc:
                self.send_json(400, {"error": str(exc)})
            else:
                self.send_json(200, {"fault": fault})
        elif (method, path) in self.routes:
            getattr(self, self.routes[method, path])()
        else:
            self.read_body()
            self.send_json(404, {"error": f"no route {method} {path}"})

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, status: int, content_type: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        # one write per chunk: one TCP segment / TLS record per SSE event
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def serve_in_span(self, name: str, route: str, work: Callable[[Span], int]) -> None:
        """Runs `work` (it answers and returns the status) in a SERVER span that
        starts before the body is read, so all of the request's work is inside it."""
        attrs = {**self.server_attributes(), "http.route": route}
        with self.server.tracer.start_as_current_span(
                name, context=extract_context(self.headers), kind=SpanKind.SERVER,
                attributes=attrs) as span:
            status = work(span)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(status))

    def server_attributes(self) -> dict[str, Any]:
        """HTTP server span attributes, with the connection tuple."""
        local = self.connection.getsockname()
        return {
            "http.request.method": self.command,
            "url.path": self.path.split("?", 1)[0],
            "client.address": self.client_address[0],
            "client.port": self.client_address[1],
            "network.peer.address": self.client_address[0],
            "network.peer.port": self.client_address[1],
            "network.local.address": local[0],
            "network.local.port": local[1],
            "server.port": local[1],
            "network.transport": "tcp",
        }

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


def run_until_signal(servers: Iterable[Any], ready: str, provider: TracerProvider,
                     extra_lines: Iterable[str] = ()) -> None:
    """Serves until SIGTERM/SIGINT, then stops cleanly and flushes spans.

    Prints `ready HOST:PORT` (then any extra lines) once every server listens.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signo, _frame: stop.set())
    servers = list(servers)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                daemon=True, name=f"serve-{i}") for i, s in enumerate(servers)]
    for t in threads:
        t.start()
    print(f"ready {ready}", flush=True)
    for line in extra_lines:
        print(line, flush=True)
    stop.wait()
    for s in servers:
        s.shutdown()
        s.server_close()
    provider.shutdown()


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
