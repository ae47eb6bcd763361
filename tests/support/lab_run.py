"""HAND-MADE run directories for the SLO, attribution and scoring tests.

Nothing here was recorded: every figure is typed in below, so the tests can state the
expected results exactly. The layout mimics a lab run of the RAG gateway (replay/): a
rag-gateway pod serving 10 requests/s, each resolving retrieval.lab inside a `resolve`
span on its own thread (a trace-stamped dns kernel event), calling retrieval, then the
model provider. A `dns` run slows every lookup during its fault phase, as the lab's DNS
server does, so time to first token breaches there.
"""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pyarrow as pa

from capture import columns as S
from runfmt import schema
from runfmt.schema import SPANS
from tests.support.runs import write_run

T0 = 1_700_000_000_000_000_000  # wall ns of the first request
MS = 1_000_000
RPS = 10
PHASES = (("baseline", 12.0), ("fault", 12.0), ("recovery", 12.0))
GATEWAY_POD = "gateway-9cf7fa27f5"
NAMESPACE = "llm-lab"
NODE = "node-1"
GATEWAY_PID = 4242
SIGNALS = ("dns", "retransmit", "connect", "tls", "runqueue", "cpu_steal", "mem_reclaim")


def _hex(n: int, width: int) -> str:
    return f"{n:0{width}x}"


def _spans_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in SPANS} for r in rows], schema=SPANS)


def make_run(root: Path, run_id: str, *, scenario: str = "dns_latency", fault: str | None = "dns",
             dns_fault_ms: float = 400.0, seed: int = 0, signals: tuple[str, ...] = SIGNALS,
             labels: bool = True) -> Path:
    """A hand-made run directory under root/tag=main/scenario=<scenario>/run=<run_id>.

    fault "dns": every getaddrinfo takes `dns_fault_ms` during the fault phase (labelled
    network_dns); None: a baseline run (labels.parquet without rows)."""
    base_s, fault_s, _ = (p[1] for p in PHASES)
    fault_lo, fault_hi = T0 + int(base_s * 1e9), T0 + int((base_s + fault_s) * 1e9)
    rng = np.random.default_rng(seed)
    n = int(sum(p[1] for p in PHASES) * RPS)
    requests, spans, events = [], [], []
    for i in range(n):
        sent = T0 + i * (1_000_000_000 // RPS)
        phase = "baseline" if sent < fault_lo else "fault" if sent < fault_hi else "recovery"
        in_fault = fault == "dns" and fault_lo <= sent < fault_hi
        dns_ms = dns_fault_ms if in_fault else 2.0 + float(rng.uniform(0, 1))
        ttft = 250.0 + 2 * dns_ms
        e2e = ttft + 600.0
        trace = _hex(seed * 1_000_000 + i + 1, 32)
        tid = 5000 + i % 8
        server_id, resolve_id = _hex(4 * i + 1, 16), _hex(4 * i + 2, 16)
        retrieve_id, gen_id = _hex(4 * i + 3, 16), _hex(4 * i + 4, 16)
        requests.append({"request_id": f"r-{i:04d}", "phase": phase, "prompt_class": "chat_short",
                         "scheduled_ns": sent, "sent_ns": sent, "ttft_ms": ttft, "tpot_ms": 10.0,
                         "itl_ms": [10.0], "e2e_ms": e2e, "output_tokens": 60, "status": "ok",
                         "http_status": 200, "error": None, "trace_id": trace, "attempts": 1})
        common = {"trace_id": trace, "service_name": "rag-gateway", "host_name": NODE,
                  "process_pid": GATEWAY_PID, "thread_id": tid, "k8s_pod_name": GATEWAY_POD,
                  "k8s_namespace_name": NAMESPACE}
        r_start = sent + 2 * MS
        r_end = r_start + int(dns_ms * MS) + MS
        q_start, q_end = r_end + MS, r_end + 51 * MS
        g_start, g_end = q_end + MS, sent + int(e2e * MS) - MS
        spans += [
            {**common, "span_id": server_id, "parent_span_id": "f" * 16, "name": "POST /v1/chat/completions",
             "kind": "server", "start_ns": sent + MS, "end_ns": sent + int(e2e * MS),
             "duration_ns": int(e2e * MS) - MS, "status_code": "unset", "http_response_status_code": 200},
            {**common, "span_id": resolve_id, "parent_span_id": server_id, "name": "resolve retrieval.lab",
             "kind": "internal", "start_ns": r_start, "end_ns": r_end, "duration_ns": r_end - r_start,
             "status_code": "unset", "server_address": "retrieval.lab", "server_port": 8081},
            {**common, "span_id": retrieve_id, "parent_span_id": server_id, "name": "POST /retrieve",
             "kind": "client", "start_ns": q_start, "end_ns": q_end, "duration_ns": q_end - q_start,
             "status_code": "unset", "server_address": "retrieval.lab", "server_port": 8081,
             "network_peer_address": "10.0.0.3", "network_peer_port": 8081, "client_address": "10.0.0.2",
             "client_port": 30000 + i, "http_response_status_code": 200},
            {**common, "span_id": gen_id, "parent_span_id": server_id, "name": "chat lab-model",
             "kind": "client", "start_ns": g_start, "end_ns": g_end, "duration_ns": g_end - g_start,
             "status_code": "unset", "server_address": "backend.lab", "server_port": 8443,
             "network_peer_address": "10.0.0.4", "network_peer_port": 8443, "client_address": "10.0.0.2",
             "client_port": 40000 + i, "gen_ai_operation_name": "chat", "http_response_status_code": 200},
        ]
        ev = {"pid": GATEWAY_PID, "tid": tid, "comm": "python3", "pod": GATEWAY_POD, "namespace": NAMESPACE,
              "node": NODE, "trace_id": trace}
        events += [
            {**ev, "ts_ns": r_end - MS // 2, "signal": "dns", "value_ns": int(dns_ms * MS),
             "detail": "retrieval.lab", "errno": 0, "span_id": resolve_id},
            {**ev, "ts_ns": q_start + MS // 2, "signal": "connect", "value_ns": 40_000, "errno": 0,
             "saddr": "10.0.0.2", "sport": 30000 + i, "daddr": "10.0.0.3", "dport": 8081, "family": 2,
             "span_id": retrieve_id},
        ]
    cols = {f.name: pa.array([e.get(f.name) for e in events], f.type) for f in schema.KERNEL_EVENTS}
    tables = {"requests": requests, "spans": _spans_table(spans),
              "kernel_events": S.kernel_events_table(cols, len(events))}
    if labels:
        tables["labels"] = ([{"run_id": run_id, "scenario": scenario, "domain": "network_dns", "target": "dns",
                              "intensity": json.dumps({"ms": dns_fault_ms}), "start_ns": fault_lo,
                              "end_ns": fault_hi}] if fault == "dns" else [])
    return write_run(root, run_id, scenario=scenario, manifest={
        "node": NODE, "profile": "smoke", "phases": dict(PHASES), "seed": seed,
        "capability": {"mode": "core_full",
                       "signals": {s: {"attached": s in signals, "enabled": True} for s in SIGNALS}}},
        **tables)


def paged_late(run) -> str | None:
    """None when a fault run (analyze.slo.RunSlo) pages in the window its fault was injected
    in or the next one; else what happened, for the assertion message."""
    import pyarrow.parquet as pq

    injected_ns = min(pq.read_table(run.info.run_dir / "labels.parquet").column("start_ns").to_pylist())
    injected_in = next(w.index for w in run.windows if w.start_ns <= injected_ns < w.end_ns)
    first = next((w.index for w in run.windows if w.paging), None)
    if first is not None and first <= injected_in + 1:
        return None
    return f"{run.info.scenario} {run.info.run_id}: injected in window {injected_in}, first page {first}"
