"""The RAG gateway the load generator calls: OpenAI-compatible chat completions.

Per request, all in the request's own thread and inside its spans (so the
recorder stamps that thread's kernel events with the trace):
  1. resolves the retrieval service's name with libc's getaddrinfo (the dns
     probe sees it; the lab netns' resolv.conf points at the lab DNS server),
  2. asks retrieval for documents over a new TCP connection,
  3. streams the answer from the backend over a new TLS connection, relaying
     each SSE event as it arrives,
  4. retries a 429 (honouring Retry-After up to a cap), a 5xx or a failed
     connection with seeded exponential backoff and jitter, up to N attempts,
     each attempt its own CLIENT span; the response says how many in x-lab-attempts.

    python -m replay.gateway --listen 127.0.0.1:8080 \\
        --retrieval-url http://retrieval.lab:8081 --backend-url https://backend.lab:8443 \\
        --backend-ca cert.pem

Fault (POST /admin/fault): {"kind": "delay", "ms": 100} holds every request that
long before it starts its work; {"kind": "none"} clears.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from replay.telemetry import (
    Faults, LabHandler, LabHTTPServer, configure_logging, fault_spec, format_hostport, service_parser,
    inject_context, request_id_of, run_until_signal, seeded_rng, setup_tracing, socket_attributes,
)

__all__ = ["GatewayConfig", "Upstream", "backoff_s", "main", "make_server", "retry_after_s"]

AddrInfo = tuple[Any, ...]


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    path: str  # prefix before the service's routes, without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http(s)://HOST[:PORT], got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def url(self, route: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}{route}"


@dataclass(frozen=True)
class GatewayConfig:
    retrieval: Upstream
    backend: Upstream
    backend_tls: ssl.SSLContext | None
    max_attempts: int = 4
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0
    retry_after_cap_s: float = 2.0
    timeout_s: float = 30.0
    retrieval_k: int = 4


@dataclass(frozen=True)
class _Retry:
    """A failed attempt that may be tried again."""

    status: int
    retry_after_s: float | None
    reason: str


class _UpstreamError(Exception):
    pass


def backoff_s(rng: random.Random, attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so
    retries spread out but never come back at once."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _connect(addrs: list[AddrInfo], timeout: float) -> socket.socket:
    """A new TCP connection to the first address that answers (as create_connection,
    but from addresses already resolved, so the lookup is not done twice)."""
    error: OSError = OSError("no address to connect to")
    for family, type_, proto, _name, sockaddr in addrs:
        sock = socket.socket(family, type_, proto)
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def _query_of(body: dict[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class GatewayHandler(LabHandler):
    routes: ClassVar[Mapping[tuple[str, str], str]] = {("POST", "/v1/chat/completions"): "chat"}

    @property
    def cfg(self) -> GatewayConfig:
        return self.server.config

    def chat(self) -> None:
        self.serve_in_span("POST /v1/chat/completions", "/v1/chat/completions", self._chat)

    def _chat(self, span: Span) -> int:
        raw = self.read_body()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError('request body needs "messages": [...]')
            given = body.get("metadata")
            metadata: dict[str, Any] = given if isinstance(given, dict) else {}
            k = int(metadata.get("retrieval_k") or self.cfg.retrieval_k)
        except ValueError as exc:
            self.send_json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            return 400
        rid = request_id_of(self.headers, raw)
        prompt_class = str(metadata.get("prompt_class") or self.headers.get("x-prompt-class")
                           or "chat_short")
        span.set_attributes({"lab.request_id": rid, "lab.prompt_class": prompt_class})
        fault = self.server.faults.get("delay")
        if fault:
            span.set_attribute("lab.fault", "delay")
            time.sleep(fault["ms"] / 1000)
        try:
            docs = self._retrieve(rid, _query_of(body), k)
        except (OSError, http.client.HTTPException, _UpstreamError, ValueError) as exc:
            self.send_json(502, {"error": {"message": f"retrieval failed: {exc}",
                                           "type": "upstream_error"}})
            return 502
        context = "\n".join(str(d.get("text", "")) for d in docs)
        upstream = {**body,
                    "messages": [{"role": "system", "content": "Context:\n" + context},
                                 *body["messages"]],
                    "metadata": {**metadata, "prompt_class": prompt_class}}
        return self._generate(rid, prompt_class, upstream, span)

    # ------------------------------------------------------------ steps

    def _resolve(self, up: Upstream) -> list[AddrInfo]:
        """libc's getaddrinfo, every request: no cache, as a plain client has none."""
        with self.server.tracer.start_as_current_span(
                f"resolve {up.host}", kind=SpanKind.INTERNAL,
                attributes={"server.address": up.host, "server.port": up.port}) as span:
            addrs = socket.getaddrinfo(up.host, up.port, type=socket.SOCK_STREAM)
            span.set_attribute("lab.dns.answers", [str(a[4][0]) for a in addrs])
            return addrs

    def _client_attrs(self, up: Upstream, route: str) -> dict[str, Any]:
        return {"server.address": up.host, "server.port": up.port,
                "http.request.method": "POST", "url.full": up.url(route)}

    def _retrieve(self, rid: str, query: str, k: int) -> list[dict[str, Any]]:
        up = self.cfg.retrieval
        addrs = self._resolve(up)
        with self.server.tracer.start_as_current_span(
                "POST /retrieve", kind=SpanKind.CLIENT,
                attributes=self._client_attrs(up, "/retrieve")) as span:
            sock = _connect(addrs, self.cfg.timeout_s)
            span.set_attributes(socket_attributes(sock))
            conn = http.client.HTTPConnection(up.host, up.port, timeout=self.cfg.timeout_s)
            conn.sock = sock  # connected above: http.client would resolve the name again
            headers = inject_context({"Content-Type": "application/json", "x-request-id": rid})
            try:
                conn.request("POST", up.path + "/retrieve",
                             body=json.dumps({"query": query, "k": k}), headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            span.set_attribute("http.response.status_code", resp.status)
            if resp.status != 200:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(resp.status))
                raise _UpstreamError(f"retrieval answered {resp.status}")
            docs = json.loads(data)["documents"]
            span.set_attribute("lab.retrieval.documents", len(docs))
            return docs

    def _generate(self, rid: str, prompt_class: str, body: dict[str, Any], span: Span) -> int:
        cfg = self.cfg
        payload = json.dumps(body).encode()
        rng = seeded_rng(self.server.seed, "backoff", rid)
        waited = 0.0
        outcome: int | _Retry = _Retry(502, None, "no attempt made")
        attempt = 0
        for attempt in range(1, cfg.max_attempts + 1):
            outcome = self._attempt(attempt, rid, prompt_class, body, payload)
            if isinstance(outcome, int) or attempt == cfg.max_attempts:
                break
            if outcome.retry_after_s is not None and outcome.status == 429:
                delay = min(outcome.retry_after_s, cfg.retry_after_cap_s)
            else:
                delay = backoff_s(rng, attempt, cfg.backoff_base_s, cfg.backoff_cap_s)
            waited += delay
            time.sleep(delay)
        span.set_attribute("lab.attempts", attempt)
        span.set_attribute("lab.backoff_s", waited)
        if isinstance(outcome, int):
            return outcome
        headers = {"x-lab-attempts": str(attempt), "x-lab-request-id": rid}
        if outcome.retry_after_s is not None:
            headers["Retry-After"] = str(round(outcome.retry_after_s))
        self.send_json(outcome.status, {"error": {"message": f"{outcome.reason} after {attempt} "
                                                  "attempt(s)", "type": "upstream_error"}}, headers)
        return outcome.status

    def _attempt(self, attempt: int, rid: str, prompt_class: str, body: dict[str, Any],
                 payload: bytes) -> int | _Retry:
        """One try at the backend; an int once the answer went to the client."""
        up, cfg = self.cfg.backend, self.cfg
        try:
            addrs = self._resolve(up)
        except OSError as exc:
            return _Retry(502, None, f"cannot resolve {up.host}: {exc}")
        model = str(body.get("model") or "lab-llm")
        attrs = {**self._client_attrs(up, "/v1/chat/completions"),
                 "http.request.resend_count": attempt - 1,
                 "gen_ai.operation.name": "chat", "gen_ai.provider.name": "lab",
                 "gen_ai.request.model": model, "gen_ai.request.stream": bool(body.get("stream")),
                 "lab.request_id": rid, "lab.attempt": attempt}
        with self.server.tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT,
                                                      attributes=attrs) as span:
            start = time.monotonic()
            try:
                sock = _connect(addrs, cfg.timeout_s)
                span.set_attributes(socket_attributes(sock))
                if cfg.backend_tls is not None:
                    # the handshake runs here, in this thread and span (the tls probe sees it)
                    handshake = time.monotonic()
                    sock = cfg.backend_tls.wrap_socket(sock, server_hostname=up.host)
                    span.set_attribute("lab.tls.handshake_s", time.monotonic() - handshake)
            except ssl.SSLCertVerificationError as exc:
                # a wrong CA will not fix itself: fail without retrying
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("error.type", "server_certificate_invalid")
                self.send_json(502, {"error": {"message": f"backend certificate: {exc}",
                                               "type": "upstream_error"}},
                               {"x-lab-attempts": str(attempt)})
                return 502
            except OSError as exc:
                return self._failed(span, _Retry(502, None, f"cannot connect to backend: {exc}"),
                                    type(exc).__name__)
            conn = http.client.HTTPConnection(up.host, up.port, timeout=cfg.timeout_s)
            conn.sock = sock
            headers = inject_context({"Content-Type": "application/json", "x-request-id": rid,
                                      "x-prompt-class": prompt_class, "x-lab-attempt": str(attempt)})
            try:
                conn.request("POST", up.path + "/v1/chat/completions", body=payload, headers=headers)
                resp = conn.getresponse()
                span.set_attribute("http.response.status_code", resp.status)
                if resp.status == 429 or resp.status >= 500:
                    resp.read()
                    retry = _Retry(resp.status, retry_after_s(resp.headers.get("Retry-After")),
                                   f"backend answered {resp.status}")
                    return self._failed(span, retry, str(resp.status))
                return self._relay(resp, attempt, rid, span, start)
            except (OSError, http.client.HTTPException) as exc:
                # nothing reached the client yet (_relay handles its own errors)
                return self._failed(span, _Retry(502, None, f"backend failed: {exc!r}"),
                                    type(exc).__name__)
            finally:
                conn.close()

    @staticmethod
    def _failed(span: Span, retry: _Retry, error_type: str) -> _Retry:
        span.set_status(Status(StatusCode.ERROR, retry.reason))
        span.set_attribute("error.type", error_type)
        return retry

    def _relay(self, resp: http.client.HTTPResponse, attempt: int, rid: str, span: Span,
               start: float) -> int:
        """Passes the backend's answer to the client, SSE event by SSE event."""
        headers = {"x-lab-attempts": str(attempt), "x-lab-request-id": rid}
        streaming = resp.headers.get("Content-Type", "").startswith("text/event-stream")
        # an upstream failure before the first byte to the client may be retried
        data = b"" if streaming else resp.read()
        pending, first = b"", True
        try:
            if not streaming:
                self._record_usage(data, span)
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                return resp.status
            self.start_chunked(resp.status, "text/event-stream", headers)
            # read1 returns what the backend has sent so far (one HTTP chunk per
            # event), so each event goes on as soon as it is complete
            while data := resp.read1(65536):
                pending += data
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    if first:
                        span.set_attribute("gen_ai.response.time_to_first_chunk",
                                           time.monotonic() - start)
                        first = False
                    if b'"usage"' in event:
                        self._record_usage(event.removeprefix(b"data: "), span)
                    self.write_chunk(event + b"\n\n")
            if pending:
                self.write_chunk(pending)
            self.end_chunked()
        except (OSError, http.client.HTTPException) as exc:
            # the answer has started (or the client left): no retry; cut the stream
            self.close_connection = True
            span.set_status(Status(StatusCode.ERROR, f"stream broken: {exc!r}"))
            span.set_attribute("error.type", type(exc).__name__)
        return resp.status

    @staticmethod
    def _record_usage(data: bytes, span: Span) -> None:
        try:
            obj = json.loads(data)
        except ValueError:
            return
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict):
            span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens", 0)))
            span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens", 0)))
        if isinstance(obj, dict) and obj.get("model"):
            span.set_attribute("gen_ai.response.model", str(obj["model"]))


def make_server(address: tuple[str, int], *, seed: int, provider: Any,
                config: GatewayConfig) -> LabHTTPServer:
    faults = Faults({"delay": fault_spec(ms=(None, 0, 600_000))})
    return LabHTTPServer(address, GatewayHandler, faults=faults, provider=provider, seed=seed,
                         config=config)


def main(argv: list[str] | None = None) -> None:
    parser = service_parser("replay.gateway", __doc__, "rag-gateway")
    parser.add_argument("--retrieval-url", required=True, help="e.g. http://retrieval.lab:8081")
    parser.add_argument("--backend-url", required=True, help="e.g. https://backend.lab:8443")
    parser.add_argument("--backend-ca", type=Path, help="CA (or self-signed cert) to trust")
    parser.add_argument("--max-attempts", type=int, default=4)
    parser.add_argument("--backoff-base-ms", type=float, default=100)
    parser.add_argument("--backoff-cap-ms", type=float, default=2000)
    parser.add_argument("--retry-after-cap-s", type=float, default=2.0)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--retrieval-k", type=int, default=4)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        retrieval, backend = Upstream.parse(args.retrieval_url), Upstream.parse(args.backend_url)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_attempts < 1:
        parser.error("--max-attempts must be at least 1")
    tls = None
    if backend.scheme == "https":
        tls = ssl.create_default_context(cafile=str(args.backend_ca) if args.backend_ca else None)
    config = GatewayConfig(retrieval, backend, tls, args.max_attempts, args.backoff_base_ms / 1000,
                           args.backoff_cap_ms / 1000, args.retry_after_cap_s, args.timeout_s,
                           args.retrieval_k)
    provider = setup_tracing(args.service_name, args.otlp_endpoint)
    server = make_server(args.listen, seed=args.seed, provider=provider, config=config)
    run_until_signal([server], format_hostport(server.server_address), provider)


if __name__ == "__main__":
    main()
