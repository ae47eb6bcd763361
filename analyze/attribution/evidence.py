"""The evidence of attribution: the feature catalogue, how a feature's shift against the
reference period is measured, and what one run holds per window (DuckDB). The design:
docs/attribution.md."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analyze.slo import RunInfo, RunSlo, SloWindow, Workload, evaluate_con
from runfmt.contracts import fault_domains

UNKNOWN = "unknown"
# the v1 contract's fault domains (docs/contracts/v1/incident-attribution.schema.json)
DOMAINS = tuple(d for d in fault_domains() if d != UNKNOWN)
MAX_SHIFT = 8.0


@dataclass(frozen=True)
class Feature:
    name: str
    source: str  # ebpf | otel | application (v1 evidence source)
    unit: str
    floor: float
    domains: tuple[str, ...]
    signal: str | None  # kernel signal it needs, None for span/request evidence
    value: Callable[[Mapping[str, Any]], float | None]


def _per_s(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda st: (st[key] or 0) / st["window_s"] if st["window_s"] else None


def _share(num: str, den: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda st: st[num] / st[den] if st[den] else None


def _stat(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda st: st[key]


FEATURES = (
    Feature("dns_p50_ms", "ebpf", "ms", 10.0, ("network_dns",), "dns", _stat("dns_p50_ms")),
    Feature("connect_p95_ms", "ebpf", "ms", 10.0, ("network_egress",), "connect", _stat("connect_p95_ms")),
    Feature("syn_retransmits_per_s", "ebpf", "1/s", 0.5, ("network_egress",), "retransmit",
            _per_s("syn_retransmits")),
    Feature("egress_retransmits_per_s", "ebpf", "1/s", 0.5, ("network_egress",), "retransmit",
            _per_s("egress_retransmits")),
    Feature("tls_handshake_p50_ms", "ebpf", "ms", 10.0, ("network_egress",), "tls", _stat("tls_p50_ms")),
    Feature("runq_us_per_wakeup", "ebpf", "us", 100.0, ("cpu_throttle",), "runqueue",
            lambda st: st["runq_ms"] * 1e3 / st["runq_wakeups"] if st["runq_wakeups"] else None),
    Feature("reclaim_ms_per_s", "ebpf", "ms/s", 1.0, ("memory_pressure",), "mem_reclaim",
            _per_s("reclaim_ms")),
    Feature("http429_share", "otel", "ratio", 0.02, ("provider_throttle",), None, _share("gen_429", "gen_calls")),
    # retries follow 429s and 5xx alike: context for both, evidence of neither
    Feature("retry_share", "application", "ratio", 0.02, (), None,
            _share("retried", "requests")),
    Feature("http5xx_share", "otel", "ratio", 0.02, ("provider_error",), None, _share("gen_5xx", "gen_calls")),
    Feature("retrieval_server_p50_ms", "otel", "ms", 10.0, ("retrieval_backend",), None,
            _stat("retrieval_server_p50_ms")),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)
BY_NAME = {f.name: f for f in FEATURES}
SIGNATURES = {d: tuple(f.name for f in FEATURES if d in f.domains) for d in DOMAINS}
# listed with a retrieval hypothesis: the parts of a retrieval call (decomposition)
RETRIEVAL_PARTS = (("retrieval_ms_p50", "otel", "call"), ("retrieval_dns_p50_ms", "ebpf", "dns"),
                   ("retrieval_connect_p50_ms", "ebpf", "connect"), ("retrieval_tls_p50_ms", "ebpf", "tls"),
                   ("retrieval_server_p50_ms", "otel", "server"))


def shift(value: float | None, reference: float | None, floor: float) -> float:
    """Doublings of `value` above `reference`, both lifted by `floor`; 0 without a value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0
    ref = 0.0 if reference is None or (isinstance(reference, float) and math.isnan(reference)) else reference
    return float(min(MAX_SHIFT, max(0.0, math.log2((value + floor) / (ref + floor)))))


def feature_values(stats: Mapping[str, Any]) -> dict[str, float | None]:
    return {f.name: f.value(stats) for f in FEATURES}


def shifts(window: Mapping[str, Any], reference: Mapping[str, Any],
           signals: Mapping[str, bool] | None = None) -> dict[str, float]:
    """Feature shifts of a window's stats against the reference's; signals: attached per signal."""
    w, r = feature_values(window), feature_values(reference)
    out = {}
    for f in FEATURES:
        recorded = f.signal is None or signals is None or signals.get(f.signal, False)
        out[f.name] = shift(w[f.name], r[f.name], f.floor) if recorded else 0.0
    return out


@dataclass
class RunEvidence:
    """What one run holds for attribution: its SLO view and the stats per window."""

    info: RunInfo
    slo: RunSlo
    reference: dict[str, Any]  # stats of the reference period
    reference_ns: tuple[int, int]
    stats: dict[int, dict[str, Any]]  # window index -> stats
    extra: Any = None  # what `also` returned (analyze.scoring: correlation truth)

    @property
    def workload(self) -> Workload:
        return self.slo.workload

    def shift_rows(self) -> list[tuple[SloWindow, dict[str, float]]]:
        return [(w, shifts(self.stats[w.index], self.reference, self.info.signals)) for w in self.slo.windows]


def reference_period(info: RunInfo, slo: RunSlo) -> tuple[int, int]:
    baseline_s = info.phases.get("baseline") or slo.scaling.run_s / 4
    return slo.start_ns, slo.start_ns + int(round(baseline_s * 1e9))


def collect_run(run_dir: Path, config: Mapping, *, budget: float | None = None, window_ms: int | None = None,
                also: Callable[[Any, RunEvidence], Any] | None = None) -> RunEvidence:
    """Opens one run, evaluates its SLOs, correlates it and gathers the window stats.

    `also(con, evidence)` runs on the same connection before it closes (the correlation
    temp tables corr_events / corr_best are there)."""
    import pyarrow as pa

    from analyze import correlate
    from analyze.session import open_runs
    from runfmt import queries

    info = RunInfo.read(run_dir)

    def gather(con) -> RunEvidence:
        slo = evaluate_con(con, info, config, budget)
        correlate.prepare(con, window_ms or int(config.get("correlation", {}).get("window_ms",
                                                                                    correlate.DEFAULT_WINDOW_MS)))
        lo, hi = reference_period(info, slo)
        windows = pa.table({"window_no": [0] + [w.index for w in slo.windows],
                            "lo_ns": [lo] + [w.start_ns for w in slo.windows],
                            "hi_ns": [hi] + [w.end_ns for w in slo.windows]},
                           schema=pa.schema([("window_no", pa.int64()), ("lo_ns", pa.int64()),
                                             ("hi_ns", pa.int64())]))
        con.from_arrow(windows).create_view("attr_windows")
        con.from_arrow(pa.table({"pod": pa.array(list(slo.workload.pods), pa.string())})).create_view("attr_pods")
        req = slo.requests
        attempts = np.asarray(req["attempts"], dtype=float)
        con.from_arrow(pa.table({
            "done_ns": pa.array(np.asarray(req["done_ns"], np.int64)),
            "attempts": pa.array(attempts, pa.float64(), mask=np.isnan(attempts)),
        })).create_view("attr_requests")
        # the service name comes from the run's own spans and is bound, never formatted in
        con.execute("CREATE OR REPLACE TEMP TABLE attr_calls AS\n" + queries.load("attr_calls"),
                    {"service": slo.workload.service})
        rows = queries.run(con, "attr_window_stats").to_pylist()
        by_no = {r.pop("window_no"): r for r in rows}
        ev = RunEvidence(info, slo, by_no.pop(0), (lo, hi), by_no)
        if also is not None:
            ev.extra = also(con, ev)
        return ev

    runs = open_runs([Path(run_dir)])
    try:
        return runs.use(gather)  # a damaged data page: named, not a DuckDB error
    finally:
        runs.con.close()
