"""The lab's open-loop load generator: sends a planned schedule to an
OpenAI-compatible gateway and records what each request looked like from the
client, into `requests/part-*.parquet` of a run directory.

Open loop: every request leaves at its planned time, whatever happened to the
earlier ones. Each request runs on its own worker thread over its own new
connection (DNS, TCP and TLS are part of every request, so faults there show in
the figures). At most `max_in_flight` requests run at once; a request whose time
comes while all slots are busy is not sent late but recorded as
`dropped_by_client`.

Per-request metrics follow vLLM's serving benchmark (`benchmark_serving.py` and
its `backend_request_func.py` for the openai-chat backend); times are taken on
one monotonic clock, from just before the connection is opened ("sent"):

* TTFT: sent → the first SSE chunk whose `choices[0].delta.content` is not empty
  (role-only and usage-only chunks are not tokens).
* ITL: the gaps between consecutive content chunks; one list per request, with
  one entry fewer than the content chunks.
* E2E (vLLM's "latency"): sent → the last content chunk. The usage chunk and
  `[DONE]` that follow carry no token; the request still counts as ok only if
  `[DONE]` arrives.
* TPOT, "time per output token, excluding the first": (E2E − TTFT) / (output
  tokens − 1), null with fewer than 2 tokens. Output tokens are the usage
  chunk's `completion_tokens` when the gateway sends it, else the number of
  content chunks (the lab streams one token per chunk).

For failed requests `e2e_ms` is the time until the failure was seen (the status
line of a 429, the timeout, the broken stream); summaries use ok requests only.

    summary = run_load("http://10.200.0.2:8080", schedule_phases(profile, 42, phases),
                       out_dir=run_dir, timeout_s=60, tracer_provider=provider)

    python -m replay.loadgen --url URL --profile rag_mixed_20rps --seconds 30 --seed 42 --out DIR
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import queue
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from replay.profiles import PROFILES, PlannedRequest, schedule, schedule_phases
from runfmt.errors import ConfigError
from runfmt.schema import REQUESTS
from runfmt.writer import PartWriter

MODEL = "lab-model"
DROPPED = "dropped_by_client"
_ERROR_BODY_BYTES = 4096
# a worker gets its request this early and waits for the send time itself, so a
# late hand-off (thread start, GIL) does not make the send late
_HANDOFF_LEAD_NS = 20_000_000

@dataclass
class RequestRecord:
    """One row of REQUESTS."""

    request_id: str
    phase: str | None
    prompt_class: str
    scheduled_ns: int
    sent_ns: int | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    e2e_ms: float | None = None
    output_tokens: int | None = None
    status: str = "error"
    http_status: int | None = None
    error: str | None = None
    trace_id: str | None = None
    attempts: int | None = None


@dataclass(frozen=True)
class Summary:
    planned: int
    sent: int
    by_status: dict[str, int]
    ttft_ms: dict[str, float]  # p50/p95/p99 over ok requests; empty when none was ok
    e2e_ms: dict[str, float]
    achieved_rps: float  # sent requests / (run start → last send)
    send_lag_ms: dict[str, float]  # p50/p99/max of sent − scheduled
    parts: list[str]

    @property
    def dropped_by_client(self) -> int:
        return self.by_status.get(DROPPED, 0)

    def render(self) -> str:
        def pcts(values: dict[str, float]) -> str:
            return " ".join(f"{k} {v:.1f}" for k, v in values.items()) or "-"

        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status.items()))
        return "\n".join([
            f"requests: {self.planned} planned, {self.sent} sent ({self.achieved_rps:.2f} rps); {statuses}",
            f"ttft ms: {pcts(self.ttft_ms)}",
            f"e2e ms:  {pcts(self.e2e_ms)}",
            f"send lag ms: {pcts(self.send_lag_ms)}",
        ])


def _percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {}
    return {f"p{p}": float(np.percentile(values, p)) for p in points}


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    ssl_context: ssl.SSLContext | None

    @classmethod
    def parse(cls, url: str, ca_file: Path | str | None) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"cannot send load to {url!r}: not an http(s) URL with a host",
                              "pass the gateway's base URL, e.g. http://10.200.0.2:8080")
        try:
            context = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the CA file {str(ca_file)!r}: {exc}",
                              "pass the lab CA's PEM file, or none to use the system's") from None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/") + "/v1/chat/completions", context)

    def connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.ssl_context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s, context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)


@dataclass
class _Stream:
    """What one response stream showed, in monotonic ns."""

    first_ns: int | None = None
    last_ns: int | None = None
    gaps_ns: list[int] = field(default_factory=list)
    chunks: int = 0
    usage_tokens: int | None = None
    done: bool = False

    def feed(self, payload: str, now_ns: int) -> None:
        if payload == "[DONE]":
            self.done = True
            return
        data = json.loads(payload)
        choices = data.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            if self.last_ns is None:
                self.first_ns = now_ns
            else:
                self.gaps_ns.append(now_ns - self.last_ns)
            self.last_ns = now_ns
            self.chunks += 1
        usage = data.get("usage") or {}
        if usage.get("completion_tokens") is not None:
            self.usage_tokens = int(usage["completion_tokens"])


def _body(req: PlannedRequest) -> bytes:
    return json.dumps({
        "model": MODEL,
        "messages": [{"role": "user", "content": req.prompt}],
        "stream": True,
        "max_tokens": req.max_tokens,
        "metadata": {"prompt_class": req.prompt_class, "request_id": req.request_id},
    }).encode()


def _error_body(resp: http.client.HTTPResponse) -> str:
    try:
        return resp.read(_ERROR_BODY_BYTES)[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return "(no body)"


def _sleep_until(mono_ns: int) -> None:
    delay = (mono_ns - time.perf_counter_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _attempts(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Client:
    """Sends one planned request and measures it; never raises for network trouble."""

    def __init__(self, target: _Target, timeout_s: float, tracer_provider: trace.TracerProvider | None) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.tracer = tracer_provider.get_tracer("replay.loadgen") if tracer_provider is not None else None
        self._ids = RandomIdGenerator()

    def _start_span(self, req: PlannedRequest) -> trace.Span:
        if self.tracer is None:  # no exporter: still a valid, sampled trace for the gateway to continue
            ctx = trace.SpanContext(self._ids.generate_trace_id(), self._ids.generate_span_id(), is_remote=False,
                                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
            return trace.NonRecordingSpan(ctx)
        return self.tracer.start_span(f"chat {MODEL}", kind=trace.SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",  # the API spoken; the lab serves it
            "gen_ai.request.model": MODEL,
            "gen_ai.request.max_tokens": req.max_tokens,
            "gen_ai.request.stream": True,
            "server.address": self.target.host,
            "server.port": self.target.port,
            "lab.request_id": req.request_id,
            "lab.prompt_class": req.prompt_class,
            **({"lab.phase": req.phase} if req.phase else {}),
        })

    def send(self, req: PlannedRequest, rec: RequestRecord, due_ns: int, to_wall: Callable[[int], int]) -> None:
        """Prepares the request, waits for its time (monotonic ns), sends and measures it."""
        body = _body(req)
        _sleep_until(due_ns)
        span = self._start_span(req)
        rec.trace_id = format(span.get_span_context().trace_id, "032x")
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream", "Connection": "close",
                   "x-request-id": req.request_id, "x-prompt-class": req.prompt_class}
        inject(headers, context=trace.set_span_in_context(span))
        try:
            with trace.use_span(span, end_on_exit=False):
                sent = time.perf_counter_ns()
                rec.sent_ns = to_wall(sent)
                stream, end = self._exchange(body, headers, rec, sent)
            self._measure(rec, stream, sent, end)
        finally:
            self._end_span(span, rec)

    def _exchange(self, body: bytes, headers: dict[str, str], rec: RequestRecord, sent: int) -> tuple[_Stream, int]:
        deadline = sent + int(self.timeout_s * 1e9)
        stream = _Stream()
        conn = self.target.connection(self.timeout_s)
        resp: http.client.HTTPResponse | None = None

        def remaining_s() -> float:
            left = (deadline - time.perf_counter_ns()) / 1e9
            if left <= 0:
                raise TimeoutError(f"no complete answer within {self.timeout_s:g} s")
            return left

        try:
            conn.connect()  # resolve, connect, handshake: part of TTFT
            sock = conn.sock
            sock.settimeout(remaining_s())
            conn.request("POST", self.target.path, body=body, headers=headers)
            resp = conn.getresponse()
            rec.http_status = resp.status
            rec.attempts = _attempts(resp.getheader("x-lab-attempts"))
            if resp.status != 200:
                end = time.perf_counter_ns()
                rec.status = f"http_{resp.status}"
                rec.error = f"HTTP {resp.status} {resp.reason}: {_error_body(resp)}"
                return stream, end
            while not stream.done:
                sock.settimeout(remaining_s())
                line = resp.readline()
                now = time.perf_counter_ns()
                if not line:
                    rec.error = "stream ended before [DONE]"
                    return stream, now
                if line.startswith(b"data:"):
                    stream.feed(line[5:].strip().decode(), now)
            if not stream.chunks:
                rec.error = "stream had no content token"
            else:
                rec.status = "ok"
            return stream, time.perf_counter_ns()
        except TimeoutError as exc:
            rec.status, rec.error = "timeout", str(exc) or "timed out"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            rec.status, rec.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            if resp is not None:
                resp.close()
            conn.close()
        return stream, time.perf_counter_ns()

    @staticmethod
    def _measure(rec: RequestRecord, stream: _Stream, sent: int, end: int) -> None:
        # µs resolution: finer digits are timer noise and make the column hard to compress
        rec.itl_ms = [round(g / 1e6, 3) for g in stream.gaps_ns]
        if stream.first_ns is not None:
            rec.ttft_ms = (stream.first_ns - sent) / 1e6
        tokens = stream.usage_tokens if stream.usage_tokens is not None else stream.chunks
        if stream.chunks or stream.usage_tokens is not None:
            rec.output_tokens = tokens
        last = stream.last_ns if rec.status == "ok" and stream.last_ns is not None else end
        rec.e2e_ms = (last - sent) / 1e6
        if rec.status == "ok" and rec.ttft_ms is not None and tokens >= 2:
            rec.tpot_ms = (rec.e2e_ms - rec.ttft_ms) / (tokens - 1)

    @staticmethod
    def _end_span(span: trace.Span, rec: RequestRecord) -> None:
        if not span.is_recording():
            return
        if rec.http_status is not None:
            span.set_attribute("http.response.status_code", rec.http_status)
        if rec.output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", rec.output_tokens)
        if rec.ttft_ms is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", rec.ttft_ms / 1e3)
        if rec.status != "ok":
            span.set_attribute("error.type", rec.status)
            span.set_status(trace.Status(trace.StatusCode.ERROR, rec.error))
        span.end()


class _Sink:
    """Collects records from the workers; a thread writes them as Parquet parts."""

    _STOP = object()

    def __init__(self, out_dir: Path | None) -> None:
        # (status, sent_ns, scheduled_ns, ttft_ms, e2e_ms): plain tuples of atoms, which the
        # garbage collector stops tracking, so a long run does not lengthen its pauses
        self.outcomes: list[tuple[str, int | None, int, float | None, float | None]] = []
        self.writer = PartWriter(out_dir / "requests", REQUESTS, max_rows=5000, max_seconds=10.0) if out_dir else None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="loadgen-writer", daemon=True)
        self._thread.start()

    def put(self, rec: RequestRecord) -> None:
        self._queue.put(rec)

    def close(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()

    def _run(self) -> None:
        pending: list[RequestRecord] = []
        added_at = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = None
            stop = item is self._STOP
            if isinstance(item, RequestRecord):
                self.outcomes.append((item.status, item.sent_ns, item.scheduled_ns, item.ttft_ms, item.e2e_ms))
                pending.append(item)
            if self.writer is None:
                if stop:
                    return
                continue
            if pending and (stop or time.monotonic() - added_at >= 1.0):
                self.writer.add(pa.Table.from_pylist([asdict(r) for r in pending], schema=REQUESTS))
                pending.clear()
                added_at = time.monotonic()
            if stop or self.writer.due():
                self.writer.flush()
            if stop:
                return


def run_load(url: str, planned: Sequence[PlannedRequest], *, out_dir: Path | None, timeout_s: float = 60.0,
             tracer_provider: trace.TracerProvider | None = None, ca_file: Path | str | None = None,
             max_in_flight: int = 512, on_progress: Callable[[int, int], None] | None = None) -> Summary:
    """Sends `planned` open loop from now (send_at 0 = the call), returns when every request ended.

    Writes out_dir/requests/part-*.parquet when out_dir is given. `on_progress(done, total)`
    is called from worker threads.
    """
    if max_in_flight < 1:
        raise ConfigError(f"max_in_flight {max_in_flight} is below 1", "allow at least one request in flight")
    client = _Client(_Target.parse(url, ca_file), timeout_s, tracer_provider)
    order = sorted(planned, key=lambda r: r.send_at)
    slots = threading.BoundedSemaphore(max_in_flight)
    done, done_lock = [0], threading.Lock()
    # objects made before the run (the schedule, the caller's heap) are left out of
    # collections during it: a full collection stops every thread for tens of ms
    gc.collect()
    gc.freeze()
    sink = _Sink(out_dir)
    mono0, wall0 = time.perf_counter_ns(), time.time_ns()

    def to_wall(mono_ns: int) -> int:
        return wall0 + mono_ns - mono0

    def finish(rec: RequestRecord) -> None:
        sink.put(rec)
        with done_lock:
            done[0] += 1
            count = done[0]
        if on_progress is not None:
            on_progress(count, len(order))

    def work(req: PlannedRequest, rec: RequestRecord, due: int) -> None:
        try:
            client.send(req, rec, due, to_wall)
        except Exception as exc:  # a bug here must not lose the row
            rec.status, rec.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            slots.release()
            finish(rec)

    try:
        with ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="loadgen") as pool:
            for req in order:
                due = mono0 + int(req.send_at * 1e9)
                _sleep_until(due - _HANDOFF_LEAD_NS)
                rec = RequestRecord(req.request_id, req.phase, req.prompt_class, to_wall(due))
                if not slots.acquire(blocking=False):
                    rec.status, rec.error = DROPPED, f"{max_in_flight} requests already in flight"
                    finish(rec)
                    continue
                pool.submit(work, req, rec, due)
    finally:
        sink.close()
        gc.unfreeze()
    return _summarize(sink, len(order), wall0)


def _summarize(sink: _Sink, planned: int, wall0: int) -> Summary:
    outcomes = sink.outcomes
    sent = [(sent_ns, scheduled_ns) for _, sent_ns, scheduled_ns, _, _ in outcomes if sent_ns is not None]
    ok = [(ttft, e2e) for status, _, _, ttft, e2e in outcomes if status == "ok"]
    window_s = (max(s for s, _ in sent) - wall0) / 1e9 if sent else 0.0
    lags = [(s - due) / 1e6 for s, due in sent]
    return Summary(
        planned=planned,
        sent=len(sent),
        by_status=dict(Counter(o[0] for o in outcomes)),
        ttft_ms=_percentiles([t for t, _ in ok if t is not None]),
        e2e_ms=_percentiles([e for _, e in ok if e is not None]),
        achieved_rps=len(sent) / window_s if window_s > 0 else 0.0,
        send_lag_ms={**_percentiles(lags, (50, 99)), "max": max(lags)} if lags else {},
        parts=list(sink.writer.parts) if sink.writer else [],
    )


def _phases(text: str) -> list[tuple[str, float]]:
    phases = []
    for item in text.split(","):
        name, _, seconds = item.partition("=")
        phases.append((name.strip(), float(seconds)))
    return phases


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m replay.loadgen", description="Seeded open-loop load generator.")
    ap.add_argument("--url", required=True, help="gateway base URL, e.g. http://10.200.0.2:8080")
    ap.add_argument("--profile", default="rag_mixed_20rps", choices=sorted(PROFILES))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--phases", help="instead of --seconds: baseline=600,fault=600,recovery=300")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, help="run directory; rows go to OUT/requests/")
    ap.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    ap.add_argument("--max-in-flight", type=int, default=512)
    ap.add_argument("--ca-file", type=Path)
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    a = ap.parse_args(argv)
    profile = PROFILES[a.profile]
    planned = schedule_phases(profile, a.seed, _phases(a.phases)) if a.phases else schedule(profile, a.seed, a.seconds)
    summary = run_load(a.url, planned, out_dir=a.out, timeout_s=a.timeout, ca_file=a.ca_file,
                       max_in_flight=a.max_in_flight)
    print(json.dumps(asdict(summary)) if a.json else summary.render(), flush=True)


if __name__ == "__main__":
    main()
