"""A deterministic LLM backend: OpenAI-compatible chat completions over HTTPS.

Each request draws its time to first token, its output length, its inter-token
gaps and its words from a random stream fixed by (seed, request id), so a
request id gets the same answer and the same schedule in any arrival order. The
times are really slept, token by token, so the scheduler and the network see a
streaming server at work. A GenAI SERVER span covers each request.

Like a model server with memory-mapped weights, it maps a weights file
(--weights-mb, in --weights-file) and reads a few of its pages per token
(--weights-pages), at places drawn from the same stream. Resident, that costs
microseconds; when memory pressure evicts the pages, each token faults them
back from disk (the memory_pressure fault, replay/faults.py).

    python -m replay.backend --listen 127.0.0.1:8443 [--cert C --key K]

Faults (POST /admin/fault): {"kind": "throttle", "retry_after_s": 1, "fraction": 1.0}
answers 429 with Retry-After; {"kind": "error", "fraction": 0.2} answers 500;
{"kind": "tls_delay", "ms": 300} stalls every TLS handshake; an optional
"count" ends throttle/error after that many hits; {"kind": "none"} clears.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import random
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from opentelemetry.trace import Span, Status, StatusCode

from replay import certs
from replay.telemetry import (
    Faults, LabHandler, LabHTTPServer, configure_logging, fault_spec, format_hostport, service_parser,
    pseudo_words, request_id_of, run_until_signal, seeded_rng, setup_tracing,
)

__all__ = ["PROFILES", "BackendConfig", "Plan", "Profile", "draw_plan", "main", "make_server"]


@dataclass(frozen=True)
class Profile:
    """Distributions of one prompt class: lognormal TTFT and length, uniform gaps."""

    ttft_median_s: float
    ttft_sigma: float
    tokens_median: int
    tokens_sigma: float
    gap_s: tuple[float, float]


PROFILES: dict[str, Profile] = {
    "chat_short": Profile(0.150, 0.35, 40, 0.40, (0.015, 0.030)),
    "rag_medium": Profile(0.300, 0.35, 120, 0.35, (0.015, 0.030)),
    "context_long": Profile(0.600, 0.35, 200, 0.30, (0.015, 0.030)),
}


@dataclass(frozen=True)
class Plan:
    """What one request will produce, and when."""

    request_id: str
    prompt_class: str
    ttft_s: float
    gaps_s: tuple[float, ...]  # before tokens 2..n
    words: tuple[str, ...]
    finish_reason: str

    def summary(self) -> dict[str, Any]:
        """The draws, reported to the caller so tests and runs can compare them."""
        schedule = json.dumps([self.ttft_s, self.gaps_s, self.words]).encode()
        return {
            "request_id": self.request_id,
            "prompt_class": self.prompt_class,
            "ttft_s": round(self.ttft_s, 6),
            "gaps_s_total": round(sum(self.gaps_s), 6),
            "output_tokens": len(self.words),
            "schedule_sha256": hashlib.sha256(schedule).hexdigest(),
        }


def draw_plan(seed: int, request_id: str, prompt_class: str, max_tokens: int | None = None) -> Plan:
    profile = PROFILES[prompt_class]
    rng = seeded_rng(seed, "backend", request_id)
    ttft = rng.lognormvariate(math.log(profile.ttft_median_s), profile.ttft_sigma)
    n = round(rng.lognormvariate(math.log(profile.tokens_median), profile.tokens_sigma))
    n = min(max(n, 1), 4 * profile.tokens_median)  # no runaway tail
    gaps = [rng.uniform(*profile.gap_s) for _ in range(n - 1)]
    words = pseudo_words(rng, n)
    # max_tokens truncates after drawing, so it never changes the other draws
    finish = "stop"
    if max_tokens is not None and max_tokens < n:
        n, finish = max_tokens, "length"
    return Plan(request_id, prompt_class, ttft, tuple(gaps[: n - 1]), tuple(words[:n]), finish)


@dataclass(frozen=True)
class ChatRequest:
    request_id: str
    prompt_class: str
    model: str
    stream: bool
    max_tokens: int | None
    input_tokens: int
    attempt: int


def parse_request(raw: bytes, headers: Any) -> ChatRequest:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ValueError('request body needs "messages": [...]')
    metadata = body.get("metadata") or {}
    prompt_class = metadata.get("prompt_class") or headers.get("x-prompt-class") or "chat_short"
    if prompt_class not in PROFILES:
        raise ValueError(f"unknown prompt class {prompt_class!r}; known: {sorted(PROFILES)}")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    # about four characters per token, as the usual rule of thumb
    chars = sum(len(str(m.get("content", ""))) for m in body["messages"] if isinstance(m, dict))
    return ChatRequest(
        request_id=request_id_of(headers, raw),
        prompt_class=prompt_class,
        model=str(body.get("model") or "lab-llm"),
        stream=bool(body.get("stream", False)),
        max_tokens=max_tokens,
        input_tokens=max(1, math.ceil(chars / 4)),
        attempt=int(headers.get("x-lab-attempt") or 1),
    )


PAGE = mmap.PAGESIZE


class Weights:
    """A file of `mb` MiB written, mapped and touched here, so its page cache is charged to
    this process's memory cgroup; `read` reads `pages_per_token` of its pages."""

    def __init__(self, path: Path, mb: int, pages_per_token: int) -> None:
        block = b"\x5a" * (1 << 20)
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), mb << 20, prot=mmap.PROT_READ)
        path.unlink()  # the mapping keeps the file until the process ends: nothing left behind
        self.map.madvise(mmap.MADV_RANDOM)  # a fault reads its page, not its neighbours
        self.pages, self.pages_per_token = (mb << 20) // PAGE, pages_per_token
        self.read(random.Random(0), self.pages)  # resident from the start

    def read(self, rng: random.Random, pages: int | None = None) -> int:
        m, n = self.map, self.pages
        return sum(m[rng.randrange(n) * PAGE] for _ in range(pages or self.pages_per_token))


@dataclass(frozen=True)
class BackendConfig:
    model: str
    time_scale: float  # 0 skips every sleep (overhead measurements); draws are unchanged
    weights: Weights | None = None


def _record_ttft(span: Span, seconds: float) -> None:
    # the GenAI span attribute, and the server metric's name, which the
    # recorder's spans table also flattens
    span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
    span.set_attribute("gen_ai.server.time_to_first_token", seconds)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class BackendHandler(LabHandler):
    routes: ClassVar[Mapping[tuple[str, str], str]] = {("POST", "/v1/chat/completions"): "chat"}

    def chat(self) -> None:
        self.serve_in_span("chat", "/v1/chat/completions", self._chat)

    def _chat(self, span: Span) -> int:
        raw = self.read_body()
        try:
            req = parse_request(raw, self.headers)
        except ValueError as exc:
            self.send_json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            return 400
        span.update_name(f"chat {req.model}")
        span.set_attributes({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "lab",
            "gen_ai.system": "lab",  # pre-1.37 name of provider.name, for older readers
            "gen_ai.request.model": req.model,
            "gen_ai.request.stream": req.stream,
            "lab.request_id": req.request_id,
            "lab.prompt_class": req.prompt_class,
            "lab.attempt": req.attempt,
        })
        if req.max_tokens is not None:
            span.set_attribute("gen_ai.request.max_tokens", req.max_tokens)
        return self._fault_answer(req, span) or self._answer(req, span)

    def _fault_answer(self, req: ChatRequest, span: Span) -> int | None:
        """429 or 500 when a throttle/error fault hits this request, else None."""
        faults, seed = self.server.faults, self.server.seed
        for kind in ("throttle", "error"):
            # a draw per attempt, so a retry may get through a partial fault
            draw = seeded_rng(seed, "fault", kind, req.request_id, req.attempt).random()

            def hits(fault: dict[str, Any], draw: float = draw) -> bool:
                return draw < fault["fraction"]

            fault = faults.hit(kind, hits)
            if fault is None:
                continue
            span.set_attribute("lab.fault", kind)
            if kind == "throttle":
                retry_after = str(math.ceil(fault["retry_after_s"]))
                self.send_json(429, {"error": {"message": "rate limited (lab fault)",
                                               "type": "rate_limit_error"}},
                               {"Retry-After": retry_after})
                return 429
            self.send_json(500, {"error": {"message": "internal error (lab fault)",
                                           "type": "server_error"}})
            return 500
        if self.server.faults.get("tls_delay"):
            span.set_attribute("lab.fault", "tls_delay")
        return None

    def _answer(self, req: ChatRequest, span: Span) -> int:
        cfg: BackendConfig = self.server.config
        plan = draw_plan(self.server.seed, req.request_id, req.prompt_class, req.max_tokens)
        cid = f"chatcmpl-{hashlib.sha256(req.request_id.encode()).hexdigest()[:24]}"
        created = int(time.time())
        usage = {"prompt_tokens": req.input_tokens, "completion_tokens": len(plan.words),
                 "total_tokens": req.input_tokens + len(plan.words)}
        span.set_attributes({
            "gen_ai.response.model": cfg.model,
            "gen_ai.response.id": cid,
            "gen_ai.response.finish_reasons": [plan.finish_reason],
            "gen_ai.usage.input_tokens": req.input_tokens,
            "gen_ai.usage.output_tokens": len(plan.words),
            "lab.drawn_ttft_s": plan.ttft_s,
        })
        headers = {"x-lab-request-id": req.request_id, "x-lab-prompt-class": req.prompt_class}
        start = time.monotonic()
        scale = cfg.time_scale
        weights = cfg.weights
        pages = random.Random(f"{self.server.seed}:{req.request_id}:weights")

        def token() -> None:
            if weights is not None:
                weights.read(pages)

        if not req.stream:
            # sleep token by token, as the streaming path does: same wakeups
            time.sleep(plan.ttft_s * scale)
            token()
            _record_ttft(span, time.monotonic() - start)
            for gap in plan.gaps_s:
                time.sleep(gap * scale)
                token()
            self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": cfg.model,
                "choices": [{"index": 0, "finish_reason": plan.finish_reason,
                             "message": {"role": "assistant", "content": " ".join(plan.words)}}],
                "usage": usage, "lab": plan.summary(),
            }, headers)
            return 200

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                         "model": cfg.model, **extra,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        try:
            self.start_chunked(200, "text/event-stream", headers)
            time.sleep(plan.ttft_s * scale)
            token()
            self.write_chunk(chunk({"role": "assistant", "content": plan.words[0]}))
            _record_ttft(span, time.monotonic() - start)
            for gap, word in zip(plan.gaps_s, plan.words[1:], strict=True):
                time.sleep(gap * scale)
                token()
                self.write_chunk(chunk({"content": " " + word}))
            self.write_chunk(chunk({}, plan.finish_reason, usage=usage, lab=plan.summary())
                             + b"data: [DONE]\n\n")
            self.end_chunked()
        except OSError as exc:  # reset, broken pipe, TLS EOF, timeout
            # the client left mid-stream: its loss, but the span says so
            self.close_connection = True
            span.set_status(Status(StatusCode.ERROR, f"client gone: {exc}"))
            span.set_attribute("error.type", type(exc).__name__)
        return 200


def make_server(address: tuple[str, int], *, seed: int, provider: Any, cert: Path, key: Path,
                config: BackendConfig) -> LabHTTPServer:
    faults = Faults({
        "throttle": fault_spec(retry_after_s=(1, 0, 3600), fraction=(1.0, 0, 1), count=(0, 0, 1e9)),
        "error": fault_spec(fraction=(1.0, 0, 1), count=(0, 0, 1e9)),
        "tls_delay": fault_spec(ms=(None, 0, 60_000)),
    })
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    def tls_delay() -> float:
        fault = faults.get("tls_delay")
        return fault["ms"] / 1000 if fault else 0.0

    return LabHTTPServer(address, BackendHandler, faults=faults, provider=provider, seed=seed,
                         tls=tls, tls_delay=tls_delay, config=config)


def main(argv: list[str] | None = None) -> None:
    parser = service_parser("replay.backend", __doc__, "llm-backend")
    parser.add_argument("--cert", type=Path, help="PEM certificate (made when absent)")
    parser.add_argument("--key", type=Path, help="PEM private key (made when absent)")
    parser.add_argument("--model", default="lab-llm", help="model name the responses report")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiplies every sleep; 0 measures pure overhead")
    parser.add_argument("--weights-file", type=Path,
                        help="the weights file it writes and maps (default: in the temp folder)")
    parser.add_argument("--weights-mb", type=int, default=64, help="size of the weights file, MiB; 0: none (default 64)")
    parser.add_argument("--weights-pages", type=int, default=16, help="weight pages read per token (default 16)")
    args = parser.parse_args(argv)
    if args.weights_mb < 0 or args.weights_pages < 1:
        parser.error("--weights-mb must be >= 0 and --weights-pages >= 1")
    configure_logging(args.log_level)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.cert is None:
        args.cert, args.key = certs.make_self_signed(Path(tempfile.gettempdir()) / "slo-lab-certs")
    weights = None
    if args.weights_mb:
        path = args.weights_file or Path(tempfile.gettempdir()) / f"slo-lab-weights-{os.getpid()}.bin"
        weights = Weights(path, args.weights_mb, args.weights_pages)
    provider = setup_tracing(args.service_name, args.otlp_endpoint)
    server = make_server(args.listen, seed=args.seed, provider=provider, cert=args.cert,
                         key=args.key, config=BackendConfig(args.model, args.time_scale, weights))
    run_until_signal([server], format_hostport(server.server_address), provider)


if __name__ == "__main__":
    main()
