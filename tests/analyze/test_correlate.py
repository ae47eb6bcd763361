"""sloan correlate: tiered correlation of kernel events with spans, on hand-made runs.

The fixture `runs` below is small and written out in full: each event's `detail` names
what it tests, the golden files under tests/analyze/golden/ hold the expected outputs.
A changed result is a reviewed diff: regenerate them with
    SLOAN_UPDATE_GOLDEN=1 pytest tests/analyze/test_correlate.py
and read the diff before committing it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyze.cli import main
from analyze.correlate import OUTPUTS, STEPS, TIERS, correlate, correlate_run, prepare
from analyze.session import open_runs
from tests.support.runs import write_run as write_run_dir
from runfmt import queries
from runfmt.manifest import write_manifest
from runfmt.schema import KERNEL_EVENTS, SPANS

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SLOAN_UPDATE_GOLDEN") == "1"

T0 = 1_700_000_000_000_000_000  # ns; fixture times are milliseconds after it
MS = 1_000_000


def trace(c: str) -> str:
    return c * 32


def span(n: int) -> str:
    return f"{n:016x}"


def write_run(root: Path, run_id: str, events: list[dict], spans: list[dict], *, parts: int = 1) -> Path:
    """A run directory in the hive layout; rows are dicts, missing columns null."""
    return write_run_dir(root, run_id, tag="t", scenario="s", parts=parts, kernel_events=events, spans=spans)


def ev(detail: str, t_ms: float, signal: str = "dns", value_ms: float | None = None, **cols) -> dict:
    return {"ts_ns": T0 + round(t_ms * MS), "signal": signal, "detail": detail,
            "value_ns": None if value_ms is None else round(value_ms * MS), **cols}


def sp(trace_id: str, span_id: str, name: str, start_ms: float, end_ms: float, **cols) -> dict:
    start, end = T0 + round(start_ms * MS), T0 + round(end_ms * MS)
    return {"trace_id": trace_id, "span_id": span_id, "name": name, "start_ns": start, "end_ns": end,
            "duration_ns": end - start, "attributes": [("k", "v")], **cols}


# --- the hand-made runs -------------------------------------------------------------------

POD_A = {"pod": "pod-a", "pid": 10, "node": "node-1"}
POD_B = {"pod": "pod-b", "pid": 20, "node": "node-1"}
TUPLE_C1 = {"saddr": "10.0.0.3", "sport": 41000, "daddr": "10.0.0.9", "dport": 8000}
POD_C = {"pod": "pod-c", "pid": 0, "node": "node-2"}  # retransmits: pid is often 0
POD_D2 = {"pod": "pod-d2", "pid": 41, "node": "node-3"}


def fixture_spans() -> list[dict]:
    res_a = {"k8s_pod_name": "pod-a", "process_pid": 10, "service_name": "svc-a", "k8s_node_name": "node-1"}
    res_b = {"k8s_pod_name": "pod-b", "process_pid": 20, "service_name": "svc-b", "k8s_node_name": "node-1"}
    res_c = {"k8s_pod_name": "pod-c", "process_pid": 30, "service_name": "svc-c", "k8s_node_name": "node-2",
             "kind": "client"}
    return [
        # trace_id tier: a root span and a shorter child inside it
        sp(trace("a"), span(0xA1), "a1 root", 1000, 2000, **res_a),
        sp(trace("a"), span(0xA2), "a2 child", 1200, 1500, parent_span_id=span(0xA1), **res_a),
        # pod_pid tier
        sp(trace("b"), span(0xB1), "b1", 1000, 2000, **res_b),
        # no pod: pod tiers never match a null pod
        sp(trace("e"), span(0xE1), "x1 no pod", 1000, 2000, process_pid=20),
        # pod_conn tier: c2 before c1 in the file, same window (tie -> smaller span_id)
        sp(trace("c"), span(0xC2), "c2 server_*", 1000, 2000, client_address="10.0.0.3", client_port=41001,
           server_address="10.0.0.8", server_port=9000, **res_c),
        sp(trace("c"), span(0xC1), "c1 network_peer_*", 1000, 2000, client_address="10.0.0.3", client_port=41000,
           network_peer_address="10.0.0.9", network_peer_port=8000, server_address="api.example",
           server_port=443, **res_c),
        # service_node tier: d1 runs svc-d on node-3 (host_name only); d2 maps pod-d2 to svc-d
        sp(trace("d"), span(0xD1), "d1", 1000, 2000, k8s_pod_name="pod-d1", process_pid=40, service_name="svc-d",
           host_name="node-3"),
        sp(trace("f"), span(0xD2), "d2 far away", 9000, 9100, k8s_pod_name="pod-d2", process_pid=41,
           service_name="svc-d", k8s_node_name="node-4"),
    ]


def fixture_events() -> list[dict]:
    ta = {"trace_id": trace("a")}
    rev_c1 = {"saddr": "10.0.0.9", "sport": 8000, "daddr": "10.0.0.3", "dport": 41000}
    return [
        ev("a01 trace+span a1", 1300, "dns", 5, span_id=span(0xA1), **ta, **POD_A),
        ev("a02 trace only -> innermost a2", 1300, "connect", 3, **ta, **POD_A),
        ev("a03 trace only, after a2 -> a1", 1700, "tls", 7, **ta, **POD_A),
        ev("a04 trace+span a2 at its end", 1500, "runqueue", 12, span_id=span(0xA2), **ta, **POD_A),
        ev("a05 trace+span a2 1 ms past end -> pod_pid", 1501, "mem_reclaim", 2, span_id=span(0xA2), **ta,
           **POD_A),
        ev("a06 trace+span a1 at its start", 1000, "dns", 1, span_id=span(0xA1), **ta, **POD_A),
        ev("a07 trace+span a1 1 ms before -> pod_pid a1", 999, "dns", 4, span_id=span(0xA1), **ta, **POD_A),
        ev("a08 unknown trace -> pod_pid a2", 1400, "connect", 8, trace_id=trace("9"), **POD_A),
        ev("b10 pod_pid 100 ms before", 900, "dns", 6, **POD_B),
        ev("b11 pod_pid 101 ms before -> diagnostic", 899, "dns", 6, **POD_B),
        ev("b12 pod_pid 100 ms after", 2100, "runqueue", 20, **POD_B),
        ev("b13 pod_pid 101 ms after -> diagnostic", 2101, "runqueue", 20, **POD_B),
        ev("b14 other pid inside b1 -> diagnostic", 1500, "connect", 1, **{**POD_B, "pid": 21}),
        ev("b15 no pod", 1500, "dns", 1, pid=20, node="node-1"),
        ev("c20 pod_conn 250 ms before", 750, "retransmit", **TUPLE_C1, **POD_C),
        ev("c21 pod_conn 251 ms before -> diagnostic", 749, "retransmit", **TUPLE_C1, **POD_C),
        ev("c22 pod_conn reverse, 250 ms after", 2250, "retransmit", **rev_c1, **POD_C),
        ev("c23 pod_conn server_* peer -> c2", 2000, "retransmit", saddr="10.0.0.3", sport=41001,
           daddr="10.0.0.8", dport=9000, **POD_C),
        ev("c24 pod_conn 251 ms after -> diagnostic", 2251, "retransmit", **TUPLE_C1, **POD_C),
        ev("c25 tuple of c1 in another pod", 1500, "retransmit", **TUPLE_C1, **{**POD_C, "pod": "pod-z"}),
        ev("c26 pod_pid tie c1/c2 -> c1", 1500, "connect", 9, pod="pod-c", pid=30, node="node-2"),
        ev("d30 service_node 500 ms before", 500, "dns", 2, **POD_D2),
        ev("d31 service_node 501 ms before", 499, "dns", 2, **POD_D2),
        ev("d32 service_node 500 ms after", 2500, "dns", 2, **POD_D2),
        ev("d33 service_node 501 ms after", 2501, "dns", 2, **POD_D2),
        ev("d34 other node", 1500, "dns", 2, **{**POD_D2, "node": "node-9"}),
    ]


@pytest.fixture
def runs(tmp_path) -> Path:
    write_run(tmp_path, "r1", fixture_events(), fixture_spans())
    # a second run: its events never pair with r1's spans
    write_run(tmp_path, "r2",
              [ev("r2-40 pod-b pid 20, spans only in r1", 1500, "dns", 1, **POD_B),
               ev("r2-41 pod_pid y1", 1500, "tls", 3, pod="pod-y", pid=50)],
              [sp(trace("1"), span(0x11), "y1", 1000, 2000, k8s_pod_name="pod-y", process_pid=50)])
    return tmp_path


# --- golden outputs -----------------------------------------------------------------------

EVENT_GOLDEN_COLUMNS = ("run", "detail", "signal", "t_ms", "tier", "confidence", "trace_id", "span_id")
SPAN_GOLDEN_COLUMNS = (
    "run", "name", "span_id", "matched_events",
    "dns_count", "dns_ms_sum", "dns_ms_max", "connect_count", "connect_ms_sum", "connect_ms_max",
    "tls_count", "tls_ms_sum", "tls_ms_max", "retransmits", "runqueue_count", "runqueue_ms_sum",
    "runqueue_ms_max", "mem_reclaim_count", "mem_reclaim_ms_sum", "mem_reclaim_ms_max",
)


def _cell(v) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _csv(rows: list[dict], columns: tuple[str, ...], key) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for row in sorted(rows, key=key):
        w.writerow([_cell(row[c]) for c in columns])
    return out.getvalue()


def _read_outputs(root: Path) -> dict[str, list[dict]]:
    """The three written files of every run, rows tagged with the run id, times in ms after T0."""
    out: dict[str, list[dict]] = {file: [] for file in OUTPUTS}
    for run_dir in sorted(root.glob("tag=t/scenario=s/run=*")):
        for file in OUTPUTS:
            for row in pq.read_table(run_dir / file).to_pylist():
                row["run"] = run_dir.name.removeprefix("run=")
                if "ts_ns" in row:
                    row["t_ms"] = (row["ts_ns"] - T0) / MS
                out[file].append(row)
    return out


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.is_file(), f"{path} is missing: run with SLOAN_UPDATE_GOLDEN=1 and review the new file"
    assert text == path.read_text(), f"{name} differs from the golden file; if intended, regenerate and review"


def _relative_summary(summary, root: Path) -> dict:
    d = summary.to_dict()
    for r in d["runs"]:
        r["run_dir"] = str(Path(r["run_dir"]).relative_to(root))
        r["written"] = [Path(p).name for p in r["written"]]
    return d


def test_golden_outputs(runs):
    summary = correlate([runs])
    out = _read_outputs(runs)
    by_detail = lambda r: (r["run"], r["detail"])  # noqa: E731
    check_golden("correlate_correlated.csv", _csv(out["correlated.parquet"], EVENT_GOLDEN_COLUMNS, by_detail))
    check_golden("correlate_unmatched.csv", _csv(out["unmatched.parquet"], EVENT_GOLDEN_COLUMNS, by_detail))
    check_golden("correlate_enriched_spans.csv",
                 _csv(out["enriched_spans.parquet"], SPAN_GOLDEN_COLUMNS, lambda r: (r["run"], r["name"])))
    check_golden("correlate_summary.json",
                 json.dumps(_relative_summary(summary, runs), indent=2, sort_keys=True) + "\n")


def _tiers(root: Path) -> dict[str, tuple[str | None, str | None]]:
    """detail prefix (a01, b10 ...) -> (tier, span_id) of the event's best pair, from the written files."""
    out = _read_outputs(root)
    rows = out["correlated.parquet"] + out["unmatched.parquet"]
    return {r["detail"].split()[0]: (r["tier"], r["span_id"] and r["span_id"].lstrip("0")) for r in rows}


def test_each_tier_and_boundary(runs):
    correlate([runs])
    got = _tiers(runs)
    expected = {
        # trace_id: named span, or the innermost span of the trace; span bounds inclusive
        "a01": ("trace_id", "a1"), "a02": ("trace_id", "a2"), "a03": ("trace_id", "a1"),
        "a04": ("trace_id", "a2"), "a06": ("trace_id", "a1"),
        # 1 ms outside the named span: the best lower tier (pod_pid, shortest span)
        "a05": ("pod_pid", "a2"), "a07": ("pod_pid", "a1"), "a08": ("pod_pid", "a2"),
        # pod_pid: 100 ms matches, 101 ms falls to the diagnostic tier
        "b10": ("pod_pid", "b1"), "b12": ("pod_pid", "b1"),
        "b11": ("service_node", "b1"), "b13": ("service_node", "b1"), "b14": ("service_node", "b1"),
        "b15": (None, None),
        # pod_conn: 250 ms matches, either direction, server_* when network_peer_* is absent
        "c20": ("pod_conn", "c1"), "c22": ("pod_conn", "c1"), "c23": ("pod_conn", "c2"),
        "c21": ("service_node", "c1"), "c24": ("service_node", "c1"), "c25": (None, None),
        "c26": ("pod_pid", "c1"),  # tie on duration: the smaller span_id
        # service_node: 500 ms matches, 501 ms and another node do not
        "d30": ("service_node", "d1"), "d32": ("service_node", "d1"),
        "d31": (None, None), "d33": (None, None), "d34": (None, None),
        # runs never mix
        "r2-40": (None, None), "r2-41": ("pod_pid", "11"),
    }
    assert got == expected


def test_window_caps_every_tier(runs):
    """correlation.window_ms bounds the search: no pair lies farther than the window."""
    changed = {
        100: {"b11": (None, None), "b13": (None, None), "c20": (None, None), "c22": (None, None),
              "c21": (None, None), "c24": (None, None), "d30": (None, None), "d32": (None, None)},
        99: {"b10": (None, None), "b12": (None, None)},
    }
    correlate([runs])
    expected = _tiers(runs)
    for window, diff in changed.items():  # 99 keeps the changes made at 100
        expected |= diff
        summary = correlate([runs], window_ms=window)
        assert summary.window_ms == window
        assert _tiers(runs) == expected, window


def test_enrichment_takes_only_confidence_0_7_and_above(runs):
    correlate([runs])
    out = _read_outputs(runs)
    spans = {r["name"]: r for r in out["enriched_spans.parquet"]}
    # b1 has 2 pod_pid events and 3 service_node candidates: only the 2 count
    assert (spans["b1"]["matched_events"], spans["b1"]["dns_count"], spans["b1"]["runqueue_count"]) == (2, 1, 1)
    # d1 has only service_node candidates: not enriched at all
    assert spans["d1"]["matched_events"] == 0 and spans["d1"]["dns_count"] == 0
    assert {r["tier"] for r in out["correlated.parquet"]} == {"trace_id", "pod_pid", "pod_conn"}
    assert min(r["confidence"] for r in out["correlated.parquet"]) >= 0.7
    # the 0.65 tier shows up only in the diagnostic view
    assert {r["tier"] for r in out["unmatched.parquet"]} == {"service_node", None}
    assert {r["confidence"] for r in out["unmatched.parquet"]} == {0.65, None}


def test_confidences_match_the_tier_table(runs):
    from analyze.correlate import CONFIDENCE

    correlate([runs])
    out = _read_outputs(runs)
    seen = {(r["tier"], r["confidence"]) for r in out["correlated.parquet"] + out["unmatched.parquet"]}
    assert seen - {(None, None)} == set(CONFIDENCE.items())
    assert tuple(sorted(CONFIDENCE, key=CONFIDENCE.get, reverse=True)) == TIERS


def test_output_schemas(runs):
    result = correlate_run(runs / "tag=t" / "scenario=s" / "run=r1")
    event_cols = [f.name for f in KERNEL_EVENTS if f.name not in ("trace_id", "span_id")]
    expected = [*event_cols, "event_trace_id", "event_span_id", "trace_id", "span_id", "tier", "confidence"]
    assert result.correlated.column_names == expected
    assert result.unmatched.column_names == expected
    assert result.correlated.schema.field("confidence").type == pa.float64()
    aggregates = ["matched_events"]
    for s in ("dns", "connect", "tls", "retransmit", "runqueue", "mem_reclaim"):
        aggregates += ["retransmits"] if s == "retransmit" else [f"{s}_count", f"{s}_ms_sum", f"{s}_ms_max"]
    assert result.enriched_spans.column_names == [*SPANS.names, *aggregates]
    # the span columns keep their types (the attributes map included)
    assert result.enriched_spans.schema.field("attributes").type == SPANS.field("attributes").type
    assert result.enriched_spans.column("attributes").to_pylist()[0] == [("k", "v")]


def test_session_opens_spans_as_a_view(runs, tmp_path):
    session = open_runs([runs])
    try:
        names = [r[0] for r in session.con.sql("DESCRIBE spans").fetchall()]
        assert names[:len(SPANS)] == SPANS.names  # then the hive partition columns
        assert session.con.sql("SELECT count(*) FROM spans").fetchall() == [(9,)]
    finally:
        session.con.close()
    bare = tmp_path / "bare"
    bare.mkdir()
    write_manifest(bare, {"run_id": "bare"})
    session = open_runs([bare])  # no spans/ folder: an empty view with the SPANS columns
    try:
        assert [r[0] for r in session.con.sql("DESCRIBE spans").fetchall()] == SPANS.names
    finally:
        session.con.close()


def test_no_spans_leaves_every_event_unmatched(tmp_path):
    run_dir = write_run(tmp_path, "r", [ev("lonely", 1000, **POD_B)], [])
    result = correlate_run(run_dir)
    assert result.correlated.num_rows == 0 and result.enriched_spans.num_rows == 0
    assert result.unmatched.column("tier").to_pylist() == [None]
    assert result.summary.events == 1 and result.summary.unmatched == 1


def test_write_false_writes_nothing(runs):
    summary = correlate([runs], write=False)
    assert summary.events == 28 and all(r.written == () for r in summary.runs)
    assert not list(runs.rglob("correlated.parquet"))


def test_correlate_run_takes_one_run_only(runs):
    from runfmt.errors import DataError

    with pytest.raises(DataError, match=r"is not one run directory \(2 runs below it\)"):
        correlate_run(runs)


def test_bad_window_is_refused(runs):
    from runfmt.errors import ConfigError

    for window in (0, 60_001, 1.5, True):
        with pytest.raises(ConfigError, match="correlation window"):
            correlate([runs], window_ms=window)


# --- SQL files and plans --------------------------------------------------------------------

QUERY_NAMES = [name for name, _, _ in STEPS] + list(OUTPUTS.values())
FORBIDDEN_OPERATORS = {"CROSS_PRODUCT", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN"}
BAND_JOINS = {"HASH_JOIN", "IE_JOIN", "ASOF_JOIN", "PIECEWISE_MERGE_JOIN"}


def test_every_correlate_query_is_used_and_documented():
    files = sorted(p.stem for p in queries.SQL_DIR.glob("correlate_*.sql"))
    assert files == sorted(QUERY_NAMES)
    for name in files:
        header = queries.load(name).split("\nSELECT", 1)[0].split("\nWITH", 1)[0]
        assert header.startswith(f"-- {name}:"), name
        for word in ("parameters:", "columns:"):
            assert word in header, (name, word)


def test_spans_step_lists_every_spans_column():
    sql = queries.load("correlate_spans")
    body = sql[sql.index("SELECT") + len("SELECT"):sql.index("FROM spans")]
    assert [c.strip() for c in body.split(",")] == SPANS.names


def _operators(con, sql: str, params: dict) -> list[dict]:
    (_, text), = con.sql(f"EXPLAIN (FORMAT json) {sql}", params=params).fetchall()

    def walk(node):
        conditions = node.get("extra_info", {}).get("Conditions", [])
        yield {"name": node["name"], "conditions": [conditions] if isinstance(conditions, str) else conditions}
        for child in node.get("children", []):
            yield from walk(child)

    return [op for root in json.loads(text) for op in walk(root)]


def _large_run(root: Path) -> Path:
    """A few thousand rows, so the optimizer plans for real sizes, not for a toy."""
    events, spans = [], []
    for i in range(400):
        pod = {"k8s_pod_name": f"pod-{i % 20}", "process_pid": 100 + i % 20, "service_name": f"svc-{i % 5}",
               "k8s_node_name": f"node-{i % 3}", "client_address": "10.0.0.1", "client_port": 30000 + i,
               "network_peer_address": "10.0.1.1", "network_peer_port": 8000}
        spans.append(sp(f"{i:032x}", span(i + 1), f"s{i}", i * 50, i * 50 + 400, **pod))
    for j in range(8000):
        i = j % 400
        events.append(ev(f"e{j}", i * 50 + j % 600, ("dns", "connect", "retransmit", "runqueue")[j % 4], 1,
                         pod=f"pod-{i % 20}", pid=100 + i % 20 if j % 3 else 0, node=f"node-{i % 3}",
                         saddr="10.0.0.1", sport=30000 + i, daddr="10.0.1.1", dport=8000,
                         trace_id=f"{i:032x}" if j % 5 == 0 else None))
    return write_run(root, "large", events, spans)


@pytest.mark.parametrize("which", ["fixture", "large"])
def test_plans_use_keyed_band_joins_never_cross_products(runs, which):
    run_dir = runs / "tag=t" / "scenario=s" / "run=r1" if which == "fixture" else _large_run(runs)
    session = open_runs([run_dir])
    con = session.con
    plans = {}
    try:
        for name, table, wanted in STEPS:  # each step needs the tables of the ones before it
            params = {k: 500 for k in wanted}
            plans[name] = _operators(con, queries.load(name), params)
            con.execute(f"CREATE TEMP TABLE {table} AS {queries.load(name)}", params)
        for name in OUTPUTS.values():
            plans[name] = _operators(con, queries.load(name), {})
    finally:
        con.close()
    for name, ops in plans.items():
        names = {op["name"] for op in ops}
        assert not names & FORBIDDEN_OPERATORS, (name, names)
        joins = [op for op in ops if op["name"].endswith("JOIN")]
        assert all(op["name"] in BAND_JOINS for op in joins), (name, joins)
        # every hash join has an equality key
        assert all(any(" = " in c for c in op["conditions"]) for op in joins if op["name"] == "HASH_JOIN"), name
    # candidates: each of the 5 branches is one keyed join that carries the time band itself
    # (both bounds as join conditions, not as a filter after the join)
    banded = [op for op in plans["correlate_candidates"] if op["name"] in BAND_JOINS
              and sum("ts_ns" in c and ("<=" in c or ">=" in c) for c in op["conditions"]) == 2]
    assert len(banded) == 5, plans["correlate_candidates"]


# --- properties -----------------------------------------------------------------------------

SIGNALS = ("dns", "connect", "tls", "retransmit", "runqueue", "mem_reclaim", "cpu_steal")
GRID = 50 * MS
# times on a 50 ms grid, nudged by 1 ms, so tier bounds are hit exactly and just missed
TIMES = st.builds(lambda k, d: k * GRID + d * MS, st.integers(0, 60), st.sampled_from([0, -1, 1]))
# offsets from a span's start or end that sit on, or 1 ms past, each tier's bound
OFFSETS_MS = [0, 1, 99, 100, 101, 249, 250, 251, 499, 500, 501]
ENDPOINTS = st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2", None]), st.sampled_from([80, 5000]))


@st.composite
def spans_st(draw):
    start = T0 + draw(TIMES)
    end = start + draw(st.integers(0, 20)) * GRID + draw(st.sampled_from([0, 1])) * MS
    (caddr, cport), (paddr, pport), (saddr, sport) = draw(ENDPOINTS), draw(ENDPOINTS), draw(ENDPOINTS)
    return {"trace_id": draw(st.sampled_from([trace("a"), trace("b")])),
            "span_id": draw(st.sampled_from([span(i) for i in range(1, 6)])),
            "start_ns": start, "end_ns": end, "duration_ns": end - start,
            "service_name": draw(st.sampled_from(["s0", "s1", None])),
            "process_pid": draw(st.sampled_from([1, 2])),
            "k8s_pod_name": draw(st.sampled_from(["p0", "p1", None])),
            "k8s_node_name": draw(st.sampled_from([None, "n0"])), "host_name": draw(st.sampled_from(["n1", None])),
            "client_address": caddr, "client_port": cport,
            "network_peer_address": draw(st.sampled_from([paddr, None])), "network_peer_port": pport,
            "server_address": saddr, "server_port": draw(st.sampled_from([sport, None]))}


@st.composite
def events_st(draw, spans: list[dict]):
    """An event, often built from one of the spans so that every tier and bound comes up."""
    (saddr, sport), (daddr, dport) = draw(ENDPOINTS), draw(ENDPOINTS)
    trace_id = draw(st.sampled_from([None, trace("a"), trace("b")]))
    e = {"ts_ns": T0 + draw(TIMES), "signal": draw(st.sampled_from(SIGNALS)),
         "pid": draw(st.sampled_from([0, 1, 2])), "pod": draw(st.sampled_from(["p0", "p1", None])),
         "node": draw(st.sampled_from(["n0", "n1", None])),
         "saddr": saddr, "sport": sport, "daddr": daddr, "dport": dport,
         "value_ns": draw(st.none() | st.integers(0, 10**9)),
         "trace_id": trace_id,
         "span_id": draw(st.sampled_from([None, span(1), span(2), span(3)])) if trace_id else None}
    if spans and draw(st.booleans()):
        s = draw(st.sampled_from(spans))
        offset = draw(st.sampled_from(OFFSETS_MS)) * MS
        e["ts_ns"] = s["start_ns"] - offset if draw(st.booleans()) else s["end_ns"] + offset
        kind = draw(st.sampled_from(["trace", "trace_only", "pod_pid", "pod_conn", "pod_conn_reverse", "pod"]))
        if kind in ("trace", "trace_only"):
            e["trace_id"], e["span_id"] = s["trace_id"], s["span_id"] if kind == "trace" else None
        if kind != "trace":
            e["pod"], e["node"] = s["k8s_pod_name"], s["k8s_node_name"] or s["host_name"]
        if kind == "pod_pid":
            e["pid"] = s["process_pid"]
        if kind.startswith("pod_conn"):
            local = (s["client_address"], s["client_port"])
            peer = (s["network_peer_address"] or s["server_address"], s["network_peer_port"] or s["server_port"])
            src, dst = (local, peer) if kind == "pod_conn" else (peer, local)
            (e["saddr"], e["sport"]), (e["daddr"], e["dport"]) = src, dst
    return e


@st.composite
def runs_st(draw):
    spans = draw(st.lists(spans_st(), max_size=8))
    if spans:  # twins: same window and keys, another id, so the tie-break rules come up
        for i, k in enumerate(draw(st.lists(st.sampled_from(range(len(spans))), max_size=3))):
            other_trace = draw(st.sampled_from([trace("a"), trace("b")]))
            spans.append({**spans[k], "span_id": span(6 + i), "trace_id": other_trace})
    return draw(st.lists(events_st(spans), max_size=20)), spans


RUNS = runs_st()
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def con():
    """One DuckDB connection for the property tests; each example replaces its views.

    The run-directory path (Parquet, session) is covered by the golden tests; here the
    queries run over Arrow tables, many times, quickly.
    """
    import duckdb

    connection = duckdb.connect()
    yield connection
    connection.close()


def _correlate(con, events: list[dict], spans: list[dict], window_ms: int = 500) -> dict[str, pa.Table]:
    con.register("kernel_events", pa.Table.from_pylist(events, schema=KERNEL_EVENTS))
    con.register("spans", pa.Table.from_pylist(spans, schema=SPANS))
    prepare(con, window_ms)
    return {file.removesuffix(".parquet"): queries.run(con, name) for file, name in OUTPUTS.items()}


def _outcome(con, events, spans, *, shift: int = 0) -> dict[str, list[str]]:
    """The three outputs as sorted row texts; times shifted back by `shift`."""
    out = {}
    for name, table in _correlate(con, events, spans).items():
        rows = table.to_pylist()
        for row in rows:
            for col in ("ts_ns", "start_ns", "end_ns"):
                if col in row and row[col] is not None:
                    row[col] -= shift
        out[name] = sorted(map(repr, rows))
    return out


@PROPERTY
@given(run=RUNS, data=st.data())
def test_row_order_does_not_change_results(con, run, data):
    events, spans = run
    base = _outcome(con, events, spans)
    assert _outcome(con, data.draw(st.permutations(events)), data.draw(st.permutations(spans))) == base


@PROPERTY
@given(run=RUNS, shift=st.integers(-10**17, 10**17))
def test_common_time_shift_does_not_change_results(con, run, shift):
    events, spans = run
    moved_events = [{**e, "ts_ns": e["ts_ns"] + shift} for e in events]
    moved_spans = [{**s, "start_ns": s["start_ns"] + shift, "end_ns": s["end_ns"] + shift} for s in spans]
    assert _outcome(con, moved_events, moved_spans, shift=shift) == _outcome(con, events, spans)


def test_row_order_across_part_files(tmp_path):
    """The same rows split over several Parquet parts in another order: the same files come out."""
    events, spans = fixture_events(), fixture_spans()
    a = correlate_run(write_run(tmp_path / "a", "r", events, spans))
    b = correlate_run(write_run(tmp_path / "b", "r", events[::-1], spans[::-1], parts=3))
    for name in ("correlated", "unmatched", "enriched_spans"):
        rows_a, rows_b = getattr(a, name).to_pylist(), getattr(b, name).to_pylist()
        assert sorted(map(repr, rows_a)) == sorted(map(repr, rows_b)), name


REACH_MS = {"trace_id": 0, "pod_pid": 100, "pod_conn": 250, "service_node": 500}
EVENT_KEY = ("ts_ns", "signal", "pid", "pod", "node", "saddr", "sport", "daddr", "dport", "value_ns")


def _reference(events: list[dict], spans: list[dict], window_ms: int) -> list[tuple]:
    """The tier rules read plainly, pair by pair: (event key, tier, trace_id, span_id) per event."""
    from analyze.correlate import CONFIDENCE

    pod_services = {(s["k8s_pod_name"], s["service_name"]) for s in spans
                    if s["k8s_pod_name"] is not None and s["service_name"] is not None}

    def first(*values):
        return next((v for v in values if v is not None), None)

    out = []
    for e in events:
        candidates = []
        for s in spans:
            def near(tier_ms):
                reach = min(tier_ms, window_ms) * MS
                return s["start_ns"] - reach <= e["ts_ns"] <= s["end_ns"] + reach

            same_pod = e.get("pod") is not None and e.get("pod") == s["k8s_pod_name"]
            local = (s["client_address"], s["client_port"])
            peer = (first(s["network_peer_address"], s["server_address"]),
                    first(s["network_peer_port"], s["server_port"]))
            conn = (e.get("saddr"), e.get("sport"), e.get("daddr"), e.get("dport"))
            tiers = {
                "trace_id": e.get("trace_id") is not None and e["trace_id"] == s["trace_id"]
                and e.get("span_id") in (None, s["span_id"]) and near(0),
                "pod_pid": same_pod and e.get("pid") == s["process_pid"] and near(100),
                "pod_conn": same_pod and None not in conn and conn in ((*local, *peer), (*peer, *local))
                and near(250),
                "service_node": (e.get("pod"), s["service_name"]) in pod_services
                and e.get("node") is not None and e.get("node") == first(s["k8s_node_name"], s["host_name"])
                and near(500),
            }
            candidates += [(-CONFIDENCE[t], s["end_ns"] - s["start_ns"], s["span_id"], s["trace_id"], t)
                           for t, met in tiers.items() if met]
        best = min(candidates, default=(None, None, None, None, None))
        out.append((tuple(e.get(k) for k in EVENT_KEY), best[4], best[3], best[2]))
    return sorted(out, key=repr)


@PROPERTY
@given(run=RUNS, window_ms=st.sampled_from([500, 250, 100, 99, 1]) | st.integers(1, 600))
def test_sql_agrees_with_a_plain_reading_of_the_rules(con, run, window_ms):
    events, spans = run
    result = _correlate(con, events, spans, window_ms)
    got = sorted(((tuple(r[k] for k in EVENT_KEY), r["tier"], r["trace_id"], r["span_id"])
                  for r in result["correlated"].to_pylist() + result["unmatched"].to_pylist()), key=repr)
    assert got == _reference(events, spans, window_ms)



@PROPERTY
@given(run=RUNS, window_ms=st.integers(1, 600))
def test_every_pair_lies_within_its_tier_and_the_window(con, run, window_ms):
    events, spans = run
    result = _correlate(con, events, spans, window_ms)
    windows: dict[tuple, list[tuple[int, int]]] = {}
    for s in spans:
        windows.setdefault((s["trace_id"], s["span_id"]), []).append((s["start_ns"], s["end_ns"]))
    correlated, unmatched = result["correlated"].to_pylist(), result["unmatched"].to_pylist()
    paired = correlated + [r for r in unmatched if r["tier"]]
    for row in paired:
        reach = min(REACH_MS[row["tier"]], window_ms) * MS if row["tier"] != "trace_id" else 0
        gaps = [max(start - row["ts_ns"], row["ts_ns"] - end, 0)
                for start, end in windows[(row["trace_id"], row["span_id"])]]
        assert min(gaps) <= reach, row
    assert len(correlated) + len(unmatched) == len(events)  # every event once
    assert all(r["confidence"] >= 0.7 for r in correlated)
    assert all(r["tier"] in (None, "service_node") for r in unmatched)
    # spans count only their >= 0.7 matches (span ids may repeat here: count each id once)
    per_id = {(r["trace_id"], r["span_id"]): r["matched_events"] for r in result["enriched_spans"].to_pylist()}
    assert sum(per_id.values()) == len(correlated)


# --- CLI ------------------------------------------------------------------------------------

def test_cli_json_and_table(runs):
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert (got["window_ms"], got["events"], got["matched"], got["unmatched"]) == (500, 28, 15, 13)
    assert got["tiers"] == {"trace_id": 5, "pod_pid": 7, "pod_conn": 3, "service_node": 7}
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs / "tag=t" / "scenario=s" / "run=r1"), "--window-ms", "99"])
    assert r.exit_code == 0, r.output
    assert "correlation, window 99 ms, 1 run(s)" in r.output
    assert "service_node" in r.output and "diagnostic only" in r.output


def test_cli_window_from_config(runs, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"correlation": {"window_ms": 120}}))
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["window_ms"] == 120


def test_cli_errors(tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["correlate", "--runs", str(tmp_path / "nope")])
    assert r.exit_code == 1
    assert f"error: {tmp_path / 'nope'} does not exist" in r.output
    r = CliRunner().invoke(main, ["correlate", "--runs", str(tmp_path), "--window-ms", "0"])
    assert r.exit_code == 2
    assert "0 is not in the range 1<=x<=60000" in r.output
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["correlate"])  # --runs defaults to ./runs
    assert r.exit_code == 1 and "error: runs does not exist" in r.output
    r = CliRunner().invoke(main, ["correlate", str(tmp_path)])  # the old spelling
    assert r.exit_code == 2 and f"runs are given with --runs: sloan correlate --runs {tmp_path}" in r.output


# --- the sliced plan --------------------------------------------------------------------------

LABELED = Path(__file__).resolve().parents[2] / "datasets" / "labeled"


def test_labeled_set_keeps_its_tier_counts(tmp_path):
    """`sloan correlate` on the committed labelled set: per run and in total, the events per tier
    (and the other counts) in golden/labeled_tier_counts.json: a later plan must keep them."""
    import shutil

    want = json.loads((GOLDEN / "labeled_tier_counts.json").read_text())
    root = tmp_path / "labeled"
    shutil.copytree(LABELED, root)  # correlate writes beside each run
    r = CliRunner().invoke(main, ["correlate", "--runs", str(root), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["window_ms"] == want["window_ms"]
    for key in ("events", "matched", "unmatched", "diagnostic", "spans", "spans_enriched", "tiers"):
        assert got[key] == want[key], key
    runs = {str(Path(run["run_dir"]).relative_to(root)): {k: run[k] for k in ("events", "matched", "spans_enriched",
                                                                               "tiers")}
            for run in got["runs"]}
    assert runs == want["runs"]


def _tables(result) -> dict[str, pa.Table]:
    return {"correlated": result.correlated, "unmatched": result.unmatched, "enriched_spans": result.enriched_spans}


def test_time_slices_give_the_outputs_of_one_pass(runs, monkeypatch):
    """A run cut into many small time slices (some one event long, spans crossing their edges)
    gives, row for row and in order, what the whole-run SQL (prepare + OUTPUTS) gives."""
    import analyze.correlate as correlation

    run_dir = runs / "tag=t" / "scenario=s" / "run=r1"
    session = open_runs([run_dir])
    try:
        prepare(session.con)
        whole = {file.removesuffix(".parquet"): queries.run(session.con, name) for file, name in OUTPUTS.items()}
    finally:
        session.con.close()
    assert _tables(correlate_run(run_dir)) == whole
    for events in (1, 2, 5):
        monkeypatch.setattr(correlation, "SLICE_EVENTS", events)
        assert _tables(correlate_run(run_dir)) == whole, events


def test_plan_slices_cuts_whole_seconds_and_keeps_every_event():
    from analyze.correlate import WHOLE_RUN, plan_slices

    S = 1_000_000_000
    per_second = pa.table({
        "second": [10, 11, 12, 15, None], "events": [4, 1, 3, 2, 5],
        "first_ns": [10 * S + 1, 11 * S, 12 * S + 5, 15 * S, None],
        "last_ns": [10 * S + 9, 11 * S + 3, 12 * S + 7, 15 * S + 1, None]})
    # 10 timed events over 2 slices of about 5: seconds 10-11, then 12-15 (open-ended: it also
    # takes the 5 events without a timestamp)
    assert plan_slices(per_second, 5) == [(10 * S + 1, 11 * S + 3), (12 * S + 5, WHOLE_RUN[1])]
    assert plan_slices(per_second, 100) == [(10 * S + 1, WHOLE_RUN[1])]
    assert plan_slices(per_second, 1) == [(10 * S + 1, 10 * S + 9), (11 * S, 11 * S + 3), (12 * S + 5, 12 * S + 7),
                                          (15 * S, WHOLE_RUN[1])]
    only_nulls = pa.table({"second": [None], "events": [3], "first_ns": [None], "last_ns": [None]},
                          schema=per_second.schema)
    assert plan_slices(only_nulls, 5) == [WHOLE_RUN]


def test_events_without_a_timestamp_stay_unmatched_and_last(tmp_path, monkeypatch):
    import analyze.correlate as correlation

    events = [ev("late", 1500, **POD_B), ev("no time", 1000, **POD_B), ev("early", 1100, **POD_B)]
    run_dir = write_run(tmp_path, "r", events, [sp(trace("b"), span(0xB1), "b1", 1000, 2000,
                                                 k8s_pod_name="pod-b", process_pid=20)])
    # the schema says ts_ns is never null; a file that breaks that is read all the same
    events[1]["ts_ns"] = None
    nullable = pa.schema([f.with_nullable(True) for f in KERNEL_EVENTS])
    (part,) = (run_dir / "kernel_events").glob("part-*.parquet")
    pq.write_table(pa.Table.from_pylist(events, schema=nullable), part)
    for n in (1, 1000):
        monkeypatch.setattr(correlation, "SLICE_EVENTS", n)
        result = correlate_run(run_dir)
        assert result.correlated.column("detail").to_pylist() == ["early", "late"]
        assert result.unmatched.column("detail").to_pylist() == ["no time"]
        assert result.unmatched.column("tier").to_pylist() == [None]


def test_memory_limit(runs):
    from analyze.correlate import MIN_MEMORY_LIMIT, parse_memory_limit, slice_events
    from runfmt.errors import ConfigError

    assert parse_memory_limit(None) is None
    assert parse_memory_limit("2GB") == 2 * 10**9
    assert parse_memory_limit("1.5 GiB") == 3 * 2**29
    assert parse_memory_limit("800mb") == 800 * 10**6
    assert parse_memory_limit(MIN_MEMORY_LIMIT) == MIN_MEMORY_LIMIT
    for bad in ("2XB", "-1GB", "", "lots", "100MB", 1024):
        with pytest.raises(ConfigError, match="memory limit"):
            parse_memory_limit(bad)
    assert slice_events(None) > slice_events(parse_memory_limit("256MiB")) >= 50_000
    run_dir = runs / "tag=t" / "scenario=s" / "run=r1"
    assert _tables(correlate_run(run_dir, memory_limit="256MiB")) == _tables(correlate_run(run_dir))


def test_progress_is_reported_per_slice(runs, monkeypatch):
    import analyze.correlate as correlation

    monkeypatch.setattr(correlation, "SLICE_EVENTS", 10)
    calls = []
    summary = correlate([runs], write=False, progress=lambda run_dir, done, total: calls.append((run_dir.name, done,
                                                                                                   total)))
    r1 = [c for c in calls if c[0] == "run=r1"]
    # 0, then once per slice: a slice holds whole seconds, and r1's 26 events lie in 3 seconds
    assert r1[0] == ("run=r1", 0, 26) and r1[-1] == ("run=r1", 26, 26) and len(r1) >= 3
    assert [done for _, done, _ in r1] == sorted(done for _, done, _ in r1)
    assert ("run=r2", 2, 2) in calls and summary.events == 28


def test_written_files_are_whole_and_nothing_is_left_behind(runs, monkeypatch):
    import analyze.correlate as correlation

    monkeypatch.setattr(correlation, "SLICE_EVENTS", 4)
    correlate([runs])
    run_dir = runs / "tag=t" / "scenario=s" / "run=r1"
    assert sorted(p.name for p in run_dir.glob(".*")) == []
    in_memory = _tables(correlate_run(run_dir))
    for name, table in in_memory.items():
        assert pq.read_table(run_dir / f"{name}.parquet").equals(table), name

    def fail(*args, **kwargs):
        raise OSError("disk full")

    (run_dir / "correlated.parquet").unlink()
    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        correlate([run_dir])
    assert sorted(p.name for p in run_dir.glob(".*")) == [] and not (run_dir / "correlated.parquet").exists()


def test_cli_memory_limit(runs):
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--memory-limit", "256MB", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["tiers"] == {"trace_id": 5, "pod_pid": 7, "pod_conn": 3, "service_node": 7}
    r = CliRunner().invoke(main, ["correlate", "--runs", str(runs), "--memory-limit", "2XB"])
    assert r.exit_code == 2
    assert "Invalid value for '--memory-limit': memory limit '2XB' is not a size" in r.output
