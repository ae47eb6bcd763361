"""Load shedding: intake cost sheds span intake, kernel cost sheds probes, each step said."""

from __future__ import annotations

import http.client
import json
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from capture.cli import shed_lines
from capture.otlp import IntakeThrottle, OtlpReceiver
from capture.safety import (
    Calibration,
    CpuMeter,
    IntakeUsage,
    LoadShedder,
    ResourceMonitor,
    Sample,
    samples_table,
)
from runfmt.schema import RESOURCES


class FakeProbe:
    def __init__(self, run_ns: int = 1, hist: object | None = None) -> None:
        self.run_ns = run_ns
        self.hist = hist
        self.tuned: dict[str, int] = {}

    def tune(self, **values: int) -> None:
        self.tuned.update(values)

    def run_stats(self) -> tuple[int, int]:
        return self.run_ns, 1


class FakeThrottle:
    MAX_LEVEL = IntakeThrottle.MAX_LEVEL

    def __init__(self) -> None:
        self.levels: list[int] = []

    def set_level(self, level: int) -> None:
        self.levels.append(level)

    def describe(self, level: int) -> str:
        return IntakeThrottle().describe(level)


def _sample(overhead: float, *, kernel: float = 0.0, intake: float = 0.0,
            costs: dict[str, float] | None = None) -> Sample:
    return Sample(0, 1.0, 0.0, 0.0, 0, 0, 0, 0, overhead, 0, intake_cpu_s=intake / 50,
                  intake_overhead_pct=intake, kernel_overhead_pct=kernel, signal_cost_s=costs or {})


def _steps(shed: LoadShedder) -> list[tuple[str, str]]:
    return [(a["step"], a.get("signal") or a["detail"]) for a in shed.actions]


def test_kernel_cost_over_the_limit_sheds_probes_in_the_documented_order():
    probes = {"dns": FakeProbe(), "connect": FakeProbe(), "runqueue": FakeProbe(hist=object())}
    shed = LoadShedder(max_overhead_pct=3.0, patience=2)
    costs = {"dns": 0.01, "connect": 0.05, "runqueue": 0.02}
    for _ in range(2 * 9):
        action = shed.observe(_sample(9.0, kernel=8.0, costs=costs), probes)
        if action and action.get("how") == "detached":
            probes.pop(action["signal"])  # the recorder detaches it and stops offering it
    assert _steps(shed) == [
        ("raise_thresholds", "latency thresholds x4"),
        ("sample", "keep 1 event in 2"),
        ("sample", "keep 1 event in 4"),
        ("sample", "keep 1 event in 8"),
        ("switch_off", "connect"),  # the highest own cost: switched off, still counting
        ("switch_off", "connect"),  # still the costliest: detached
        ("switch_off", "runqueue"),  # a histogram signal is detached at once
        ("switch_off", "dns"),
        ("switch_off", "dns"),
    ]
    how = [a["how"] for a in shed.actions if a["step"] == "switch_off"]
    assert how == ["sampled_out", "detached", "detached", "sampled_out", "detached"]
    assert all(a["cause"] == "kernel" for a in shed.actions)
    assert shed.switched_off["connect"]["how"] == "detached"
    assert shed.switched_off["connect"]["detached_ns"] >= shed.switched_off["connect"]["ts_ns"]
    assert [a["level"] for a in shed.actions] == list(range(1, 10))
    assert shed.degraded


def test_a_switched_off_signal_counts_every_event_as_sampled_out():
    probe = FakeProbe()
    shed = LoadShedder(max_overhead_pct=3.0, patience=1)
    for _ in range(5):
        shed.observe(_sample(9.0, kernel=9.0, costs={"dns": 1.0}), {"dns": probe})
    assert shed.actions[-1]["how"] == "sampled_out"
    # the programs keep 1 event in 2^31 and count the rest in the kernel's sampled_out
    assert probe.tuned == {"threshold_shift": 2, "sample_shift": LoadShedder.OFF_SHIFT}


def test_intake_cost_throttles_intake_and_never_touches_a_probe():
    probes = {"dns": FakeProbe(), "connect": FakeProbe()}
    throttle = FakeThrottle()
    shed = LoadShedder(max_overhead_pct=5.0, patience=3)
    for _ in range(3 * 10):  # intake 12 % of the machine, the probes 1 %
        shed.observe(_sample(14.0, kernel=1.0, intake=12.0), probes, throttle)
    assert [a["step"] for a in shed.actions] == ["throttle_intake"] * IntakeThrottle.MAX_LEVEL
    assert throttle.levels == list(range(1, IntakeThrottle.MAX_LEVEL + 1))
    assert all(a["cause"] == "intake" for a in shed.actions)
    assert shed.actions[0]["detail"].startswith("span intake: 1 in 2 of the export requests admitted")
    assert shed.actions[-1]["detail"].startswith("span intake: none of the export requests admitted")
    assert all(p.tuned == {} for p in probes.values())
    assert shed.level == 0 and not shed.switched_off


def test_intake_is_admitted_again_once_the_overhead_falls():
    throttle = FakeThrottle()
    shed = LoadShedder(max_overhead_pct=5.0, patience=2)
    for _ in range(4):
        shed.observe(_sample(8.0, kernel=0.5, intake=6.0), {}, throttle)
    assert shed.intake_level == 2
    # throttled: 3 % in all, 1 % of it intake; with intake doubled 4 % < 90 % of 5 %
    for _ in range(2 * 2):
        shed.observe(_sample(3.0, kernel=0.5, intake=1.0), {}, throttle)
    assert shed.actions[-1]["step"] == "relax_intake" and shed.intake_level == 1
    # doubling it again would be too close to the limit: stays
    for _ in range(10):
        assert shed.observe(_sample(3.0, kernel=0.5, intake=1.6), {}, throttle) is None
    assert throttle.levels == [1, 2, 1]


def test_both_costs_high_sheds_the_probes_only_for_their_own_excess():
    probes = {"dns": FakeProbe()}
    throttle = FakeThrottle()
    shed = LoadShedder(max_overhead_pct=5.0, patience=1)
    shed.observe(_sample(14.0, kernel=6.0, intake=7.0, costs={"dns": 0.1}), probes, throttle)
    shed.observe(_sample(10.0, kernel=2.0, intake=7.0, costs={"dns": 0.1}), probes, throttle)
    assert [(a["step"], a["cause"]) for a in shed.actions] == [
        ("raise_thresholds", "kernel"), ("throttle_intake", "intake")]


def test_no_intake_traffic_and_probes_under_the_limit_sheds_nothing():
    probes = {"dns": FakeProbe()}
    shed = LoadShedder(max_overhead_pct=3.0, patience=1)
    for _ in range(5):  # e.g. a live display: neither intake nor the probes can help
        assert shed.observe(_sample(9.0, kernel=1.0), probes, FakeThrottle()) is None
    assert not shed.degraded and probes["dns"].tuned == {}


def test_a_brief_spike_does_not_shed():
    shed = LoadShedder(max_overhead_pct=3.0, patience=3)
    probes = {"dns": FakeProbe(1)}
    throttle = FakeThrottle()
    for overhead in (9.0, 9.0, 1.0, 9.0, 9.0, 1.0):
        assert shed.observe(_sample(overhead, kernel=overhead, intake=overhead), probes, throttle) is None
    assert shed.level == 0 and shed.intake_level == 0


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_monitor_splits_intake_from_the_probes_drain():
    probes = {"dns": FakeProbe(), "connect": FakeProbe()}
    monitor = ResourceMonitor(probes)
    meter = CpuMeter()
    _burn(0.10)  # the loop's drain
    meter.wrap(_burn)(0.05)  # a span part written by the loop: intake
    usage = IntakeUsage(cpu_s=0.2, loop_cpu_s=meter.cpu_s(), spans_refused=30, requests_refused=3)
    s = monitor.sample(0, 0, work={"dns": 100, "connect": 300}, intake=usage, intake_level=2)
    assert s.intake_cpu_s == pytest.approx(0.25, abs=0.02)
    assert s.kernel_cpu_s == pytest.approx(0.10, abs=0.02)
    assert s.kernel_overhead_pct < s.overhead_pct
    assert (s.spans_refused, s.requests_refused, s.intake_level) == (30, 3, 2)
    # the drain apportioned by events (plus BPF run time, zero while the stats are off)
    assert s.signal_cost_s["connect"] == pytest.approx(3 * s.signal_cost_s["dns"], rel=0.01)
    s2 = monitor.sample(0, 0, work={"dns": 100, "connect": 300}, intake=usage)
    assert (s2.intake_cpu_s, s2.spans_refused) == (0.0, 0)  # deltas, not totals
    table = samples_table([s, s2])
    assert table.schema == RESOURCES
    assert table.column("spans_refused").to_pylist() == [30, 0]


class CountingProbe:
    """A signal whose kernel stats count 400 ns a run, and whose programs count runs too."""

    def __init__(self) -> None:
        self.stats = (0, 0)
        self.counted = 0

    def run(self, n: int, stats_on: bool = True) -> None:
        self.counted += n
        if stats_on:
            self.stats = (self.stats[0] + 400 * n, self.stats[1] + n)

    def run_stats(self) -> tuple[int, int]:
        return self.stats

    def counted_runs(self) -> int:
        return self.counted


def test_calibration_prices_counted_runs_at_the_measured_ns_per_run(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    rq, idle = CountingProbe(), CountingProbe()
    cal = Calibration({"runqueue": rq, "mem_reclaim": idle}, seconds=10)
    rq.run(1000)
    clock[0] += 5
    assert cal.totals()["runqueue"] == (400_000, 1000) and not cal.done  # still calibrating: the stats
    rq.run(1000)
    clock[0] += 5
    assert cal.totals()["runqueue"] == (800_000, 2000) and cal.done
    rq.run(500, stats_on=False)  # the stats are off: only the programs count
    idle.run(7, stats_on=False)
    totals = cal.totals()
    assert totals["runqueue"] == (1_000_000, 2500)
    assert totals["mem_reclaim"] == (0, 7)  # no run while calibrating: counted, not priced
    assert cal.to_manifest() == {"seconds": 10, "done": True, "ns_per_run": {"runqueue": 400.0, "mem_reclaim": None},
                                 "uncalibrated": ["mem_reclaim"]}


def test_throttle_admits_an_even_share():
    t = IntakeThrottle()
    assert all(t.admit() for _ in range(10))
    t.set_level(2)
    assert [t.admit() for _ in range(8)] == [False, False, False, True] * 2
    t.set_level(IntakeThrottle.MAX_LEVEL)
    assert not any(t.admit() for _ in range(100))
    assert t.retry_after_s == 4


# the receiver, throttled: OTLP backpressure on both transports, every refused span counted

def _request(n: int) -> ExportTraceServiceRequest:
    spans = [Span(trace_id=bytes(range(16)), span_id=(i + 1).to_bytes(8, "big"), name=f"s{i}",
                  start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_000_001_000)
             for i in range(n)]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


@pytest.fixture
def receiver():
    tables = []
    r = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", 1 << 20, tables.append)
    r.start()
    r.tables = tables
    try:
        yield r
    finally:
        r.stop()


def _post(port: int, body: bytes, content_type: str = "application/x-protobuf"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.getheader("Retry-After"), response.read()
    finally:
        conn.close()


def test_throttled_receiver_answers_429_and_resource_exhausted_and_counts_refused_spans(receiver):
    receiver.throttle.set_level(IntakeThrottle.MAX_LEVEL)
    status, retry_after, body = _post(receiver.http_port, _request(5).SerializeToString())
    assert (status, retry_after) == (429, "4")
    assert "over its overhead limit" in status_pb2.Status.FromString(body).message
    status, retry_after, _ = _post(receiver.http_port, json.dumps({"resourceSpans": []}).encode(),
                                   "application/json")
    assert (status, retry_after) == (429, "4")

    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(_request(7), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(err.value.trailing_metadata())
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert info.retry_delay.seconds == 4
    details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert details.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)

    receiver.throttle.set_level(0)
    assert _post(receiver.http_port, _request(2).SerializeToString())[0] == 200
    c = receiver.counters
    assert (c.throttled, c.spans_refused, c.throttled_uncounted) == (3, 5 + 7, 1)
    assert c.bytes_refused > 0
    assert (c.requests_ok, c.spans_received) == (1, 2)
    assert not any(c.rejected.values())  # backpressure is not a bad request
    assert c.intake_cpu_s > 0


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_stock_exporters_retry_a_refused_batch_after_the_delay_given(receiver, transport):
    receiver.throttle.set_level(1)  # the first request refused (retry after 1 s), the next one taken
    if transport == "http":
        exporter = HttpExporter(endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/traces", timeout=10)
    else:
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True, timeout=10)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    started = time.monotonic()
    with provider.get_tracer("t").start_as_current_span("one"):
        pass
    provider.shutdown()
    waited = time.monotonic() - started
    c = receiver.counters
    assert (c.throttled, c.spans_refused, c.requests_ok, c.spans_received) == (1, 1, 1, 1)
    assert 0.8 <= waited < 5, f"the exporter retried after {waited:.2f} s, not after the 1 s it was given"


def test_shed_lines_say_what_was_shed_and_when():
    shedding = {
        "degraded": True,
        "actions": [
            {"t_s": 3.04, "cause": "intake", "intake_overhead_pct": 6.1, "overhead_pct": 7.0,
             "detail": "span intake: 1 in 2 of the export requests admitted"},
            {"t_s": 19.9, "cause": "kernel", "kernel_overhead_pct": 5.5, "overhead_pct": 6.0,
             "detail": "signal connect switched off: ..."},
        ],
        "switched_off": {
            "connect": {"t_s": 19.9, "how": "sampled_out"},
            "runqueue": {"t_s": 20.0, "how": "detached", "detached_t_s": 25.0, "uncounted_s": 5.0},
        },
        "spans_refused": 4210, "requests_refused": 37, "refused_requests_uncounted": 2,
    }
    assert shed_lines(shedding) == [
        "3.0 s (intake cost 6.10 % of 7.00 %): span intake: 1 in 2 of the export requests admitted",
        "19.9 s (kernel cost 5.50 % of 6.00 %): signal connect switched off: ...",
        "connect: off from 19.9 s, its events counted as sampled out",
        "runqueue: off from 20.0 s, detached at 25.0 s: its events in the last 5.0 s are not counted",
        ("span intake: 4,210 spans in 37 export request(s) refused with backpressure "
         "(2 OTLP/JSON request(s) among them, their spans not counted)"),
    ]


def test_receiver_throttle_is_set_by_the_shedder(receiver):
    shed = LoadShedder(max_overhead_pct=5.0, patience=1)
    shed.observe(_sample(9.0, kernel=1.0, intake=8.0), {}, receiver.throttle)
    assert receiver.throttle.level == 1


class _FakeProbe:
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls, self.hooks = name, calls, [f"{name} hooks"]
        self.obj = type("Obj", (), {"detach": lambda _self: calls.append(("detach", name))})()

    def tune(self, **values: int) -> None:
        self.calls.append(("tune", self.name, values))

    def attach_hooks(self) -> None:
        self.calls.append(("attach", self.name))


@pytest.mark.parametrize("off, expected", [
    ("cpu_steal", [("detach", "cpu_steal"), ("tune", "runqueue", {"steal_on": 0})]),  # runqueue stops charging it
    ("runqueue", [("detach", "runqueue"), ("attach", "cpu_steal")]),  # cpu_steal's own program takes over
])
def test_switching_off_one_scheduler_signal_leaves_the_other_whole(off, expected):
    from types import SimpleNamespace

    from capture.recorder import Recorder

    calls: list = []
    rec = SimpleNamespace(loaded={n: _FakeProbe(n, calls) for n in ("runqueue", "cpu_steal")}, steal_rides=True,
                          shedder=SimpleNamespace(detached={off}), attach_errors={})
    rec._steal_alone = lambda: Recorder._steal_alone(rec)
    Recorder._detach(rec, off)
    assert calls == expected
    assert not rec.steal_rides
