"""Load generator: seeded schedules, and requests against a tiny SSE server on loopback.

The server sleeps known times (TTFT, gap between tokens), so the measured
figures can be checked against what it did. Every test is bounded to a few
seconds; nothing needs root.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from replay.loadgen import REQUESTS, main, run_load
from replay.profiles import (
    PROFILES,
    PlannedRequest,
    Profile,
    PromptClass,
    schedule,
    schedule_phases,
)
from runfmt.errors import ConfigError

PROFILE = PROFILES["rag_mixed_20rps"]
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


# --- schedules -------------------------------------------------------------------------

def test_same_seed_gives_the_same_schedule_and_another_seed_does_not():
    assert schedule(PROFILE, 42, 60) == schedule(PROFILE, 42, 60)
    assert schedule(PROFILE, 42, 60) != schedule(PROFILE, 43, 60)


def test_seed_42_schedule_is_pinned():
    # a changed schedule changes every labelled run made from it: make that a reviewed diff
    plan = schedule(PROFILE, 42, 0.4)
    assert [(r.request_id, round(r.send_at, 9), r.prompt_class) for r in plan] == [
        ("42-000000", 0.124291849, "chat_short"),
        ("42-000001", 0.245240305, "chat_short"),
        ("42-000002", 0.349853476, "rag_medium"),
        ("42-000003", 0.368357294, "chat_short"),
    ]
    assert plan[0].prompt == "In two sentences, explain TCP retransmission timers to a new on-call engineer."


def test_a_longer_schedule_starts_with_the_shorter_one():
    short, long = schedule(PROFILE, 7, 30), schedule(PROFILE, 7, 90)
    assert long[:len(short)] == short


def test_ids_are_seed_and_index_and_send_times_ascend():
    plan = schedule(PROFILE, 42, 30, start_offset_s=5)
    assert [r.request_id for r in plan] == [f"42-{i:06d}" for i in range(len(plan))]
    times = [r.send_at for r in plan]
    assert times == sorted(times) and 5 <= times[0] and times[-1] < 35


def test_arrivals_are_poisson_at_the_profile_rate_and_follow_the_mix():
    duration = 1000.0
    plan = schedule(PROFILE, 42, duration)
    assert len(plan) / duration == pytest.approx(PROFILE.rate_rps, rel=0.03)
    gaps = np.diff([0.0] + [r.send_at for r in plan])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    counts = Counter(r.prompt_class for r in plan)
    for name, weight in PROFILE.mix.items():
        assert counts[name] / len(plan) == pytest.approx(weight, abs=0.02)
        assert all(r.max_tokens == PROFILE.classes[name].max_tokens for r in plan if r.prompt_class == name)


def test_prompts_differ_by_class():
    plan = schedule(PROFILE, 42, 60)
    words = {name: np.mean([len(r.prompt.split()) for r in plan if r.prompt_class == name]) for name in PROFILE.mix}
    assert words["chat_short"] < words["rag_medium"] < words["context_long"]


def test_phases_tag_requests_by_send_time_without_moving_them():
    phases = [("baseline", 20.0), ("fault", 10.0), ("recovery", 5.0)]
    plan = schedule_phases(PROFILE, 42, phases)
    assert [replace(r, phase=None) for r in plan] == schedule(PROFILE, 42, 35)
    for r in plan:
        expected = "baseline" if r.send_at < 20 else "fault" if r.send_at < 30 else "recovery"
        assert r.phase == expected, r
    assert {r.phase for r in plan} == {"baseline", "fault", "recovery"}


def test_bad_profiles_and_phases_are_refused():
    with pytest.raises(ConfigError, match="do not sum to 1"):
        Profile(rate_rps=1, mix={"a": 0.5}, classes={"a": PromptClass(8, "{topic}")})
    with pytest.raises(ConfigError, match="without a definition: b"):
        Profile(rate_rps=1, mix={"a": 0.5, "b": 0.5}, classes={"a": PromptClass(8, "{topic}")})
    with pytest.raises(ConfigError, match="longer than 0 s"):
        schedule_phases(PROFILE, 1, [("baseline", 0)])


# --- a tiny SSE gateway ------------------------------------------------------------------

@dataclass
class Behaviour:
    ttft_s: float = 0.1
    gap_s: float = 0.02
    tokens: int = 5
    status: int = 200
    attempts: str | None = "1"
    usage: bool = True
    done: bool = True
    hold_s: dict[str, float] = field(default_factory=dict)  # request id -> wait before answering


class _Handler(BaseHTTPRequestHandler):
    server: _Gateway

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _chunk(self, payload: dict | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.wfile.write(f"data: {data}\n\n".encode())

    def do_POST(self):
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"at_ns": time.time_ns(), "path": self.path, "headers": dict(self.headers),
                                 "body": body})
        b = self.server.behaviour
        time.sleep(b.hold_s.get(self.headers["x-request-id"], 0.0))
        try:
            self.send_response(b.status)
            if b.attempts is not None:
                self.send_header("x-lab-attempts", b.attempts)
            if b.status != 200:
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": "overloaded"}')
                return
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self._chunk({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})  # not a token
            time.sleep(b.ttft_s)
            for i in range(b.tokens):
                if i:
                    time.sleep(b.gap_s)
                self._chunk({"choices": [{"index": 0, "delta": {"content": f"t{i} "}}]})
            if b.usage:
                self._chunk({"choices": [], "usage": {"completion_tokens": b.tokens}})
            if b.done:
                self._chunk("[DONE]")
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass


class _Gateway(ThreadingHTTPServer):
    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.seen: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def gateway():
    servers = []

    def start(**behaviour) -> _Gateway:
        srv = _Gateway(Behaviour(**behaviour))
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def planned(n: int, every_s: float = 0.0, max_tokens: int = 16) -> list[PlannedRequest]:
    return [PlannedRequest(f"t-{i:06d}", i * every_s, "chat_short", max_tokens, f"prompt {i}", "baseline")
            for i in range(n)]


# --- requests ----------------------------------------------------------------------------

def read_rows(run_dir: Path) -> list[dict]:
    parts = sorted((run_dir / "requests").glob("part-*.parquet"))
    return sorted((row for p in parts for row in pq.read_table(p).to_pylist()), key=lambda r: r["request_id"])


def test_ttft_itl_tpot_and_e2e_match_what_the_server_did(gateway, tmp_path):
    # the server sleeps 150 ms after the request, then sends 6 tokens 40 ms apart;
    # upper bounds are loose because a shared CI host can stall a thread for tens of ms
    srv = gateway(ttft_s=0.15, gap_s=0.04, tokens=6)
    summary = run_load(srv.url, planned(3, 0.01), out_dir=tmp_path, timeout_s=5)
    assert summary.by_status == {"ok": 3}
    for rec in read_rows(tmp_path):
        assert rec["status"] == "ok" and rec["error"] is None
        assert 150 <= rec["ttft_ms"] < 400  # the role-only chunk came at once: not a token
        assert len(rec["itl_ms"]) == 5 and 35 <= np.median(rec["itl_ms"]) < 60
        assert 150 + 5 * 40 - 5 <= rec["e2e_ms"] < 700
        # the definitions, exactly: E2E ends at the last token, TPOT excludes the first
        # ITL is kept at µs resolution: each gap rounds by at most 0.5 µs
        assert rec["e2e_ms"] == pytest.approx(rec["ttft_ms"] + sum(rec["itl_ms"]), abs=0.0005 * len(rec["itl_ms"]) + 1e-9)
        assert rec["tpot_ms"] == pytest.approx((rec["e2e_ms"] - rec["ttft_ms"]) / 5)
        assert rec["tpot_ms"] == pytest.approx(np.mean(rec["itl_ms"]), abs=0.0005)
        assert rec["output_tokens"] == 6 and rec["http_status"] == 200 and rec["attempts"] == 1
    assert 150 <= summary.ttft_ms["p50"] < 400
    assert set(summary.e2e_ms) == {"p50", "p95", "p99"}


def test_one_token_has_no_tpot_and_tokens_fall_back_to_chunks(gateway, tmp_path):
    srv = gateway(ttft_s=0.0, tokens=1, usage=False, attempts=None)
    run_load(srv.url, planned(1), out_dir=tmp_path, timeout_s=5)
    [rec] = read_rows(tmp_path)
    assert rec["status"] == "ok" and rec["output_tokens"] == 1
    assert rec["tpot_ms"] is None and rec["itl_ms"] == [] and rec["attempts"] is None


def test_429_is_an_http_status_not_a_measurement(gateway, tmp_path):
    srv = gateway(status=429, attempts="3")
    summary = run_load(srv.url, planned(2), out_dir=tmp_path, timeout_s=5)
    assert summary.by_status == {"http_429": 2} and summary.ttft_ms == {}
    for rec in read_rows(tmp_path):
        assert rec["status"] == "http_429" and rec["http_status"] == 429 and rec["attempts"] == 3
        assert "overloaded" in rec["error"]
        assert rec["ttft_ms"] is None and rec["tpot_ms"] is None and rec["e2e_ms"] < 1000


def test_a_slow_answer_times_out(gateway, tmp_path):
    srv = gateway(ttft_s=3.0)
    run_load(srv.url, planned(1), out_dir=tmp_path, timeout_s=0.3)
    [rec] = read_rows(tmp_path)
    assert rec["status"] == "timeout" and rec["ttft_ms"] is None
    assert 300 <= rec["e2e_ms"] < 1500


def test_a_stream_cut_before_done_is_an_error(gateway, tmp_path):
    srv = gateway(ttft_s=0.0, done=False)
    run_load(srv.url, planned(1), out_dir=tmp_path, timeout_s=5)
    [rec] = read_rows(tmp_path)
    assert rec["status"] == "error" and rec["error"] == "stream ended before [DONE]"
    assert rec["ttft_ms"] is not None and rec["tpot_ms"] is None


def test_a_refused_connection_is_an_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    summary = run_load(f"http://127.0.0.1:{port}", planned(1), out_dir=tmp_path, timeout_s=2)
    assert summary.by_status == {"error": 1} and summary.sent == 1
    assert "ConnectionRefusedError" in read_rows(tmp_path)[0]["error"]


def test_a_slow_answer_never_delays_later_sends(gateway, tmp_path):
    # closed loop would hold every later send for the first answer's 1.5 s; the bound
    # leaves room for a busy host's scheduling stalls (typically < 1 ms here)
    plan = planned(10, 0.05)
    srv = gateway(ttft_s=0.0, tokens=2, hold_s={plan[0].request_id: 1.5})
    summary = run_load(srv.url, plan, out_dir=tmp_path, timeout_s=5)
    assert summary.by_status == {"ok": 10}
    rows = read_rows(tmp_path)
    lags_ms = [(r["sent_ns"] - r["scheduled_ns"]) / 1e6 for r in rows]
    assert all(0 <= lag < 300 for lag in lags_ms), lags_ms
    assert rows[0]["e2e_ms"] > 1500 > max(r["e2e_ms"] for r in rows[1:])
    arrived = {s["headers"]["x-request-id"]: s["at_ns"] for s in srv.seen}
    first_done = rows[0]["sent_ns"] + rows[0]["e2e_ms"] * 1e6
    assert all(arrived[r["request_id"]] < first_done for r in rows[1:])  # the server got them meanwhile
    assert summary.send_lag_ms["max"] == pytest.approx(max(lags_ms))


def test_requests_beyond_the_in_flight_cap_are_dropped_not_sent_late(gateway, tmp_path):
    srv = gateway(ttft_s=1.0, tokens=1)
    summary = run_load(srv.url, planned(5, 0.02), out_dir=tmp_path, timeout_s=5, max_in_flight=2)
    assert summary.by_status == {"ok": 2, "dropped_by_client": 3}
    assert summary.dropped_by_client == 3 and summary.sent == 2 and len(srv.seen) == 2
    dropped = [r for r in read_rows(tmp_path) if r["status"] == "dropped_by_client"]
    assert all(r["sent_ns"] is None and r["trace_id"] is None for r in dropped)


def test_parquet_has_the_schema_and_one_row_per_planned_request(gateway, tmp_path):
    srv = gateway(ttft_s=0.0, tokens=2)
    plan = schedule_phases(PROFILE, 3, [("baseline", 0.5), ("fault", 0.5)])
    summary = run_load(srv.url, plan, out_dir=tmp_path, timeout_s=5)
    assert summary.parts == ["part-00000.parquet"]
    part = pq.ParquetFile(tmp_path / "requests" / "part-00000.parquet")
    assert part.schema_arrow.equals(REQUESTS)
    assert part.metadata.row_group(0).column(0).compression == "ZSTD"
    rows = read_rows(tmp_path)
    assert [(r["request_id"], r["phase"], r["prompt_class"]) for r in rows] == \
        [(p.request_id, p.phase, p.prompt_class) for p in plan]


def test_no_out_dir_writes_nothing(gateway, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    srv = gateway(ttft_s=0.0, tokens=2)
    summary = run_load(srv.url, planned(2), out_dir=None, timeout_s=5)
    assert summary.by_status == {"ok": 2} and summary.parts == [] and not any(tmp_path.iterdir())


def test_request_carries_ids_class_and_a_valid_traceparent(gateway, tmp_path):
    srv = gateway(ttft_s=0.0, tokens=2)
    run_load(srv.url, planned(3), out_dir=tmp_path, timeout_s=5)
    by_id = {r["request_id"]: r for r in read_rows(tmp_path)}
    trace_ids = set()
    for seen in srv.seen:
        h, body = seen["headers"], seen["body"]
        assert seen["path"] == "/v1/chat/completions"
        assert body["model"] == "lab-model" and body["stream"] is True and body["max_tokens"] == 16
        assert body["metadata"] == {"prompt_class": "chat_short", "request_id": h["x-request-id"]}
        assert body["messages"][-1]["role"] == "user" and h["x-prompt-class"] == "chat_short"
        m = TRACEPARENT.match(h["traceparent"])
        assert m and int(m[1], 16) and int(m[2], 16), h["traceparent"]
        assert by_id[h["x-request-id"]]["trace_id"] == m[1]
        trace_ids.add(m[1])
    assert len(trace_ids) == 3


def test_client_spans_continue_into_the_gateway(gateway, tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    srv = gateway(ttft_s=0.0, tokens=3)
    run_load(srv.url, planned(2), out_dir=tmp_path, timeout_s=5, tracer_provider=provider)
    spans = {s.attributes["lab.request_id"]: s for s in exporter.get_finished_spans()}
    assert len(spans) == 2
    for seen in srv.seen:
        span = spans[seen["headers"]["x-request-id"]]
        m = TRACEPARENT.match(seen["headers"]["traceparent"])
        assert (int(m[1], 16), int(m[2], 16)) == (span.context.trace_id, span.context.span_id)
        assert span.kind is SpanKind.CLIENT and span.name == "chat lab-model"
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == "lab-model"
        assert span.attributes["gen_ai.request.max_tokens"] == 16
        assert span.attributes["gen_ai.usage.output_tokens"] == 3
        assert span.attributes["lab.phase"] == "baseline"
    provider.shutdown()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a test certificate")
def test_https_with_the_lab_ca(gateway, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    srv = gateway(ttft_s=0.0, tokens=2)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    url = srv.url.replace("http://", "https://")
    assert run_load(url, planned(1), out_dir=None, timeout_s=5, ca_file=cert).by_status == {"ok": 1}
    summary = run_load(url, planned(1), out_dir=tmp_path, timeout_s=5)  # the system CAs do not know it
    assert summary.by_status == {"error": 1}
    assert "CERTIFICATE_VERIFY_FAILED" in read_rows(tmp_path)[0]["error"]


def test_bad_targets_are_refused_before_sending(tmp_path):
    with pytest.raises(ConfigError, match="not an http"):
        run_load("ftp://example", planned(1), out_dir=None)
    with pytest.raises(ConfigError, match="cannot load the CA file"):
        run_load("https://127.0.0.1:1", planned(1), out_dir=None, ca_file=tmp_path / "missing.pem")


def test_progress_is_reported_for_every_request(gateway):
    srv = gateway(ttft_s=0.0, tokens=1)
    calls = []
    run_load(srv.url, planned(4), out_dir=None, timeout_s=5, on_progress=lambda d, t: calls.append((d, t)))
    assert sorted(calls) == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_manual_command_line(gateway, tmp_path, capsys):
    srv = gateway(ttft_s=0.0, tokens=2)
    main(["--url", srv.url, "--seconds", "1", "--seed", "5", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    n = len(schedule(PROFILE, 5, 1))
    assert f"{n} planned, {n} sent" in out and "ttft ms: p50" in out
    assert len(read_rows(tmp_path)) == n
