"""OTLP trace intake over HTTP (protobuf or JSON) and gRPC, for `slocap record`.

Applications keep their stock OpenTelemetry exporters and point them here. Each
export request is parsed and checked for what flattening would refuse (ids of the
wrong size), so a bad one is refused at once; an accepted one is handed to
`on_request` as it came (RawRequest): the recorder keeps the bodies in its
otlp_raw table and flattens them to spans after the recording
(capture/span_flatten.py), so taking a request costs a parse, not a flatten.
Bad input is answered with the OTLP status for it and counted; it never stops
the receiver, and neither does an exception raised by `on_request`.

When the recorder is over its overhead limit because of span intake
(capture/safety.py), `throttle` admits only a share of the export requests and
the rest are refused with OTLP backpressure, which the exporters retry later:
HTTP 429 with Retry-After, gRPC RESOURCE_EXHAUSTED with a RetryInfo. The spans
of a refused protobuf request are counted (parsing costs ~3 % of flattening);
those of a refused OTLP/JSON request are not (parsing JSON costs as much as
taking it): such requests are counted with their bytes. Each request's CPU
time on its handler thread is summed in `intake_cpu_s`.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import selectors
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from capture.spans import check_request
from runfmt.errors import CaptureError, ConfigError, DataError

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
GRPC_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# why a request was refused -> (HTTP status, gRPC code)
_OUTCOMES: dict[str, tuple[HTTPStatus, grpc.StatusCode]] = {
    "malformed": (HTTPStatus.BAD_REQUEST, grpc.StatusCode.INVALID_ARGUMENT),
    "too_large": (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, grpc.StatusCode.RESOURCE_EXHAUSTED),
    "unsupported_media_type": (HTTPStatus.UNSUPPORTED_MEDIA_TYPE, grpc.StatusCode.INVALID_ARGUMENT),
    "not_found": (HTTPStatus.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED),
    "stopping": (HTTPStatus.SERVICE_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
    # the client stopped sending its body for longer than the handler's timeout (slowloris)
    "stalled": (HTTPStatus.REQUEST_TIMEOUT, grpc.StatusCode.DEADLINE_EXCEEDED),
    # on_request failed: not retryable for OTLP clients, so a broken sink is not hammered
    "sink_error": (HTTPStatus.INTERNAL_SERVER_ERROR, grpc.StatusCode.INTERNAL),
}
REJECT_REASONS = tuple(_OUTCOMES)
_MAX_LINE = 8192  # bytes in a request or header line
_MAX_HEADERS = 100
GRPC_CORE_LIMIT = 2  # gRPC's own message limit, in multiples of otlp.max_request_bytes


# over the overhead limit: backpressure the OTLP exporters retry after the delay given
THROTTLED = "throttled"
_THROTTLED = (HTTPStatus.TOO_MANY_REQUESTS, grpc.StatusCode.RESOURCE_EXHAUSTED)


class _Rejected(Exception):
    def __init__(self, reason: str, message: str, status: HTTPStatus | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status or _outcome(reason)[0]
        self.retry_after_s = retry_after_s


def _outcome(reason: str) -> tuple[HTTPStatus, grpc.StatusCode]:
    return _THROTTLED if reason == THROTTLED else _OUTCOMES[reason]


class IntakeThrottle:
    """Which export requests are taken: all at level 0, 1 in 2**level up to MAX_LEVEL - 1,
    none at MAX_LEVEL. The load shedder (capture/safety.py) sets the level; a refused
    client is told to retry after `retry_after_s`, longer at deeper levels."""

    MAX_LEVEL = 6

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._level = 0
        self._credit = 0.0

    @property
    def level(self) -> int:
        return self._level

    def set_level(self, level: int) -> None:
        with self._lock:
            self._level = max(0, min(level, self.MAX_LEVEL))
            self._credit = 0.0

    @staticmethod
    def fraction(level: int) -> float:
        return 0.0 if level >= IntakeThrottle.MAX_LEVEL else 1 / (1 << max(level, 0))

    @staticmethod
    def retry_after(level: int) -> int:
        return min(1 << max(level - 1, 0), 4)

    @property
    def retry_after_s(self) -> int:
        return self.retry_after(self._level)

    def describe(self, level: int) -> str:
        if level <= 0:
            return "every export request admitted again"
        share = "none" if level >= self.MAX_LEVEL else f"1 in {1 << level}"
        return (f"{share} of the export requests admitted, the rest refused with backpressure "
                f"(HTTP 429, gRPC RESOURCE_EXHAUSTED; retry after {self.retry_after(level)} s)")

    def admit(self) -> bool:
        """Whether to take this request: spread evenly, `fraction` of them."""
        with self._lock:
            if self._level == 0:
                return True
            self._credit += self.fraction(self._level)
            if self._credit >= 1.0:
                self._credit -= 1.0
                return True
            return False


def _count_spans(body: bytes, media_type: str) -> int | None:
    """Spans in an export body, or None when counting would cost as much as taking them."""
    if media_type == JSON:
        return None
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        return 0
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _retry_trailers(message: str, retry_after_s: int) -> tuple[tuple[str, bytes], ...]:
    """The gRPC form of Retry-After: a google.rpc.RetryInfo, both as the status details the
    OTLP spec names and as the trailer the Python exporter reads."""
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after_s))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", info.SerializeToString()))


@dataclass(frozen=True)
class RawRequest:
    """One accepted export request as it came: a row of the otlp_raw table (runfmt/schema.py)."""

    protocol: str  # "http" or "grpc"
    media_type: str  # PROTOBUF or JSON
    arrival_ns: int  # wall clock, ns since the epoch, when its body had been read
    body: bytes  # Content-Encoding undone
    spans: int  # spans in it, counted when it was checked


@dataclass(frozen=True)
class ReceiverCounters:
    """What the receiver did so far. gRPC takes messages up to GRPC_CORE_LIMIT times
    the size cap, so the handler refuses (and counts) oversized ones; only a message past
    that is refused inside gRPC's core, before any handler, uncounted."""

    requests_ok: int
    rejected: Mapping[str, int]  # reason (REJECT_REASONS) -> requests
    spans_received: int  # spans in the requests handed to on_request without error
    # refused with backpressure while the recorder was over its overhead limit (IntakeThrottle)
    throttled: int = 0  # requests
    spans_refused: int = 0  # spans in the throttled protobuf requests
    bytes_refused: int = 0  # body bytes (decoded) of the throttled requests
    throttled_uncounted: int = 0  # throttled OTLP/JSON requests: their spans were not counted
    intake_cpu_s: float = 0.0  # CPU time of the handler threads on requests, every outcome
    # what the attribute limits cut is counted when the requests are flattened (span_flatten)

    @property
    def requests(self) -> int:
        """Every request handled: taken, refused as bad, or throttled."""
        return self.requests_ok + sum(self.rejected.values()) + self.throttled


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = endpoint.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"OTLP endpoint {endpoint!r} is not host:port",
            hint="write it like 127.0.0.1:4318, or [::1]:4318 for IPv6",
        )
    return host, int(port)


def parse_request(body: bytes, media_type: str) -> ExportTraceServiceRequest:
    """Decodes an OTLP export body; DataError when it is not one."""
    try:
        if media_type == JSON:
            document = json.loads(body)
            _hex_ids_to_base64(document)
            return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
        return ExportTraceServiceRequest.FromString(body)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        kind = "OTLP/JSON" if media_type == JSON else "protobuf"
        raise DataError(f"not a {kind} ExportTraceServiceRequest: {exc}") from None


def _hex_ids_to_base64(document: Any) -> None:
    """OTLP/JSON writes ids as hex, where the generic protobuf JSON mapping expects base64."""

    def fix(obj: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if isinstance(obj.get(key), str):
                obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode("ascii")

    for rs in document.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                fix(span, "traceId", "spanId", "parentSpanId")
                for link in span.get("links", ()):
                    fix(link, "traceId", "spanId")


def _status_body(message: str, media_type: str) -> bytes:
    """OTLP/HTTP wants a google.rpc.Status body on 4xx/5xx, encoded like the request."""
    status = status_pb2.Status(message=message)
    if media_type == JSON:
        return json_format.MessageToJson(status).encode()
    return status.SerializeToString()


class OtlpReceiver:
    """Receives OTLP traces on an HTTP and a gRPC endpoint until stop().

    on_request is called with each accepted export request that holds spans, as a
    RawRequest, from one thread at a time (the receiver serializes the calls); no call
    starts after stop() has returned. Its body parsed and its ids checked, the request
    flattens without error (capture/span_flatten.py flatten_body, with the limits of
    the caller's choosing).
    Port 0 binds a free port; the bound ports are in `http_port` and `grpc_port`.
    """

    def __init__(
        self,
        http_endpoint: str,
        grpc_endpoint: str,
        max_request_bytes: int,
        on_request: Callable[[RawRequest], None],
    ) -> None:
        self.http_endpoint = http_endpoint
        self.grpc_endpoint = grpc_endpoint
        self.max_request_bytes = max_request_bytes
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._on_request = on_request
        self._sink_lock = threading.Lock()
        # one request decoded at a time: the GIL runs one anyway, and the memory bound of a
        # request (README, "Bounded memory") then holds for concurrent ones too
        self._decoding = threading.Lock()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._ok = 0
        self._spans = 0
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.throttle = IntakeThrottle()
        self._throttled = 0
        self._spans_refused = 0
        self._bytes_refused = 0
        self._throttled_uncounted = 0
        self._intake_cpu_s = 0.0
        self._accepting = False  # new requests are taken
        self._sink_open = False  # on_request may be called
        self._http: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None

    @property
    def counters(self) -> ReceiverCounters:
        with self._lock:
            return ReceiverCounters(self._ok, dict(self._rejected), self._spans,
                                    throttled=self._throttled, spans_refused=self._spans_refused,
                                    bytes_refused=self._bytes_refused,
                                    throttled_uncounted=self._throttled_uncounted,
                                    intake_cpu_s=self._intake_cpu_s)

    def start(self) -> None:
        http_host, http_port = parse_endpoint(self.http_endpoint)
        parse_endpoint(self.grpc_endpoint)  # gRPC parses it itself; this checks the form
        self._http = _bind_http(self, http_host, http_port)
        try:
            self._grpc, self.grpc_port = _bind_grpc(self, self.grpc_endpoint)
        except BaseException:
            self._http.server_close()
            self._http = None
            raise
        self.http_port = self._http.server_address[1]
        self._accepting = self._sink_open = True
        self._grpc.start()
        self._http_thread = threading.Thread(
            target=self._http.serve, name="otlp-http", daemon=True
        )
        self._http_thread.start()

    def stop(self, grace: float = 2.0) -> None:
        """Refuses new requests, lets running ones finish for up to `grace` s, closes."""
        if self._http is None or self._grpc is None:
            return
        deadline = time.monotonic() + grace
        self._accepting = False
        grpc_done = self._grpc.stop(grace)
        self._http.stop_serving()
        if self._http_thread is not None:
            self._http_thread.join(timeout=1.0)  # no connection is accepted once it has ended
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout=max(0.0, deadline - time.monotonic()))
        grpc_done.wait(max(0.0, deadline - time.monotonic()))
        # a request past the grace must not reach on_request once stop() has returned
        if self._sink_lock.acquire(timeout=max(0.1, deadline - time.monotonic())):
            self._sink_open = False
            self._sink_lock.release()
        else:
            self._sink_open = False
            log.warning("OTLP receiver stopped while on_request was still running")
        self._http.close_connections()  # idle keep-alive clients would hold a thread each
        self._http.server_close()
        self._http = self._grpc = self._http_thread = None

    # shared by both transports

    @contextmanager
    def _request(self) -> Iterator[None]:
        """Tracks one request for graceful stop, counts how it ended and what CPU it took."""
        cpu0 = time.thread_time()
        with self._lock:
            self._inflight += 1
        try:
            yield
        except _Rejected as rejected:
            if rejected.reason != THROTTLED:  # counted with its spans by _receive
                with self._lock:
                    self._rejected[rejected.reason] += 1
            log.debug("OTLP request refused (%s): %s", rejected.reason, rejected.message)
            raise
        finally:
            cpu = time.thread_time() - cpu0
            with self._idle:
                self._inflight -= 1
                self._intake_cpu_s += cpu
                self._idle.notify_all()

    def _receive(self, body: bytes, media_type: str, protocol: str) -> None:
        """Parses and checks one export request and hands it on as it came, or raises _Rejected."""
        arrival_ns = time.time_ns()
        if not self._accepting:
            raise _Rejected("stopping", "the recorder is stopping")
        if not self.throttle.admit():
            spans = _count_spans(body, media_type)
            retry_after_s = self.throttle.retry_after_s
            with self._lock:
                self._throttled += 1
                self._bytes_refused += len(body)
                if spans is None:
                    self._throttled_uncounted += 1
                else:
                    self._spans_refused += spans
            raise _Rejected(THROTTLED, f"the recorder is over its overhead limit; retry after {retry_after_s} s",
                            retry_after_s=retry_after_s)
        try:
            with self._decoding:
                spans = check_request(parse_request(body, media_type))
        except DataError as exc:
            raise _Rejected("malformed", str(exc)) from None
        try:
            with self._sink_lock:
                if not self._sink_open:
                    raise _Rejected("stopping", "the recorder is stopping")
                if spans:
                    self._on_request(RawRequest(protocol, media_type, arrival_ns, body, spans))
        except _Rejected:
            raise
        except Exception:
            log.exception("OTLP receiver: storing %d spans failed", spans)
            raise _Rejected("sink_error", "the recorder could not store these spans") from None
        with self._lock:
            self._ok += 1
            self._spans += spans

    def _grpc_export(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        try:
            with self._request():
                if len(body) > self.max_request_bytes:
                    raise _Rejected("too_large", f"message of {len(body)} bytes exceeds "
                                                 f"otlp.max_request_bytes={self.max_request_bytes}")
                self._receive(body, PROTOBUF, "grpc")
        except _Rejected as rejected:
            if rejected.retry_after_s is not None:
                context.set_trailing_metadata(_retry_trailers(rejected.message, rejected.retry_after_s))
            context.abort(_outcome(rejected.reason)[1], rejected.message)
        return ExportTraceServiceResponse()


def _bind_http(receiver: OtlpReceiver, host: str, port: int) -> _HttpServer:
    server = _HttpServer((host, port), _Handler, bind_and_activate=False, family=_family(host))
    server.receiver = receiver
    try:
        server.server_bind()
        server.server_activate()
    except OSError as exc:  # in use, no such local address, unknown host name ...
        server.server_close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise CaptureError(
            f"cannot listen for OTLP/HTTP on {receiver.http_endpoint}: {why}", hint=_HINT_HTTP
        ) from None
    return server


def _bind_grpc(receiver: OtlpReceiver, endpoint: str) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
        options=[
            # above the cap, so the handler sees (and counts) an oversized message; bounded,
            # so memory stays bounded too
            ("grpc.max_receive_message_length", GRPC_CORE_LIMIT * receiver.max_request_bytes),
            # gRPC sets SO_REUSEPORT by default, which would let two collectors share
            # the port silently; we want "already in use" instead
            ("grpc.so_reuseport", 0),
        ],
    )
    # raw bytes in: gRPC's own deserializer would answer garbage with INTERNAL, uncounted
    handler = grpc.unary_unary_rpc_method_handler(
        receiver._grpc_export, response_serializer=ExportTraceServiceResponse.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, {"Export": handler}),))
    try:
        port = server.add_insecure_port(endpoint)
    except RuntimeError:
        server.stop(None)
        raise CaptureError(
            f"cannot listen for OTLP/gRPC on {endpoint}: {_bind_problem(*parse_endpoint(endpoint))}",
            hint=_HINT_GRPC,
        ) from None
    return server, port


_HINT_HTTP = "is another collector or recorder running there? stop it, or set otlp.endpoint to a free host:port"
_HINT_GRPC = "is another collector or recorder running there? stop it, or set otlp.grpc_endpoint to a free host:port"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_problem(host: str, port: int) -> str:
    """gRPC only says 'failed to bind'; a plain bind tells why."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return "gRPC could not bind it"


def _decode(body: bytes, encoding: str, cap: int) -> bytes:
    """Undoes Content-Encoding, producing at most `cap` bytes: a small bomb stays small."""
    if encoding == "identity":
        return body
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, cap)
    except zlib.error as exc:
        raise _Rejected("malformed", f"{encoding} body: {exc}") from None
    if not inflater.eof:
        if len(data) >= cap:
            raise _Rejected("too_large", f"body inflates beyond otlp.max_request_bytes={cap}")
        raise _Rejected("malformed", f"{encoding} body is truncated")
    return data


class _HttpServer(socketserver.ThreadingTCPServer):
    """Accepts OTLP/HTTP connections, a thread each (keep-alive: one per exporter).

    serve() blocks in select with no poll interval, and stop_serving() wakes it through a
    pipe: socketserver's serve_forever wakes twice a second to look for shutdown(), which
    an idle receiver would pay for all through a recording."""

    daemon_threads = True
    block_on_close = False  # stop() bounds the wait itself; server_close() must not join
    request_queue_size = 64
    allow_reuse_address = True
    receiver: OtlpReceiver

    def __init__(self, address: tuple[str, int], handler: type, *, bind_and_activate: bool, family: int) -> None:
        self.address_family = family
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        super().__init__(address, handler, bind_and_activate=bind_and_activate)

    def serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if self._wake_r in ready:  # stop_serving() wrote to the pipe
                    return
                self._handle_request_noblock()

    def stop_serving(self) -> None:
        os.write(self._wake_w, b"x")

    def server_close(self) -> None:
        super().server_close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wakes handler threads blocked on idle keep-alive connections so they exit."""
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the client left, or stop() cut it off
            log.debug("OTLP/HTTP: connection to %s lost", client_address)
        else:
            log.exception("OTLP/HTTP: unexpected error serving %s", client_address)


class _BadHead(Exception):
    """A request head we cannot read: answered with `status`, then the connection closes."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(socketserver.StreamRequestHandler):
    """One keep-alive connection: HTTP/1.1 as OTLP exporters speak it, POST with a
    Content-Length, Expect: 100-continue, gzip or deflate bodies.

    Lean on purpose. http.server's handler parses each head with the email package and
    logs and dates each reply: with one keep-alive client posting 51 spans at a time, it
    took 164-218 us of the receiver's CPU a request, this one 121-130 us (README,
    "Overhead benchmark")."""

    timeout = 10  # seconds a silent client may hold its connection
    rbufsize = 65536
    server: _HttpServer

    def handle(self) -> None:
        try:
            while self._one_request():
                pass
        except TimeoutError:  # an idle keep-alive client; the exporter reconnects when it has spans
            pass
        except _BadHead as bad:
            self.close_connection = True
            self._reply(bad.status, _status_body(str(bad), PROTOBUF), PROTOBUF, None)

    def _one_request(self) -> bool:
        """Serves one request; False when the connection is to close."""
        head = self._read_head()
        if head is None:
            return False
        method, target, version, headers = head
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if method != "POST":
            raise _BadHead(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not served; POST spans to {TRACES_PATH}")
        self._post(target, headers)
        return not self.close_connection

    def _read_head(self) -> tuple[str, str, str, dict[str, str]] | None:
        """Request line and headers (names lower-cased); None when the client closed between requests."""
        line = self.rfile.readline(_MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # blank lines before a request are allowed (RFC 9112, 2.2)
            line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(line) > _MAX_LINE or len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadHead(HTTPStatus.BAD_REQUEST, "not an HTTP/1.1 request line")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                return parts[0], parts[1], parts[2], headers
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or len(line) > _MAX_LINE:
                raise _BadHead(HTTPStatus.BAD_REQUEST, "a header line is malformed, cut short or too long")
            headers[name.strip().lower()] = value.strip()
        raise _BadHead(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {_MAX_HEADERS} headers")

    def _post(self, target: str, headers: Mapping[str, str]) -> None:
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        unread = self._declared_length(headers)
        receiver = self.server.receiver
        try:
            with receiver._request():
                if target.split("?", 1)[0] != TRACES_PATH:
                    raise _Rejected("not_found", f"no OTLP endpoint at {target}; traces go to {TRACES_PATH}")
                if media_type not in (PROTOBUF, JSON):
                    raise _Rejected("unsupported_media_type", f"Content-Type must be {PROTOBUF} or {JSON}")
                encoding = headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("identity", "gzip", "deflate"):
                    raise _Rejected(
                        "unsupported_media_type", f"Content-Encoding {encoding!r}: use gzip, deflate or none"
                    )
                if headers.get("expect", "").lower() == "100-continue" and unread is not None \
                        and unread <= receiver.max_request_bytes:
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                raw = self._read_body(unread, receiver.max_request_bytes)
                unread = 0
                receiver._receive(_decode(raw, encoding, receiver.max_request_bytes), media_type, "http")
        except _Rejected as rejected:
            self._reply(rejected.status, _status_body(rejected.message, media_type), media_type, unread,
                        rejected.retry_after_s)
            return
        self._reply(HTTPStatus.OK, b"{}" if media_type == JSON else b"", media_type, 0)

    @staticmethod
    def _declared_length(headers: Mapping[str, str]) -> int | None:
        if "transfer-encoding" in headers:  # chunked: not sent by OTLP exporters, refused with 411
            return None
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return None
        return length if length >= 0 else None

    def _read_body(self, length: int | None, cap: int) -> bytes:
        """The body as sent; never reads more than `cap` bytes."""
        if length is None:
            raise _Rejected("malformed", "a Content-Length is required", HTTPStatus.LENGTH_REQUIRED)
        if length > cap:
            raise _Rejected("too_large", f"body of {length} bytes exceeds otlp.max_request_bytes={cap}")
        chunks, got = [], 0
        try:
            while got < length:
                chunk = self.rfile.read1(length - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            self.close_connection = True
            raise _Rejected("stalled", f"the body stalled after {got} of {length} bytes "
                                       f"({self.timeout} s without data)") from None
        if got != length:
            raise _Rejected("malformed", f"body ended after {got} of {length} bytes")
        return b"".join(chunks)

    def _reply(self, status: HTTPStatus, body: bytes, media_type: str, unread: int | None,
               retry_after_s: int | None = None) -> None:
        lines = [f"HTTP/1.1 {status.value} {status.phrase}",
                 f"Content-Type: {JSON if media_type == JSON else PROTOBUF}",
                 f"Content-Length: {len(body)}"]
        if retry_after_s is not None:
            lines.append(f"Retry-After: {retry_after_s}")
        if unread != 0:  # the unread body would be parsed as the next request
            self.close_connection = True
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if unread:
            self._discard(unread)

    def _discard(self, unread: int) -> None:
        """Drains what the client is still sending, for at most 2 s, keeping none of it.

        Closing a socket with unread input sends a reset, and the client would see
        'connection reset' instead of our 413 (and retry); draining lets it read the answer.
        """
        deadline = time.monotonic() + 2.0
        try:
            self.connection.settimeout(0.5)
            while unread > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(unread, 65536))
                if not chunk:
                    break
                unread -= len(chunk)
        except OSError:
            pass
