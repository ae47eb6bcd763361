"""The lab end to end: one smoke rep of a real fault, a labelled run directory."""

from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq
import pytest

from replay.runner import LabOptions, run_lab
from runfmt.config import load_config

pytestmark = pytest.mark.kernel


def test_a_smoke_rep_of_dns_latency_is_a_labelled_run(tmp_path):
    opts = LabOptions(scenarios=["dns_latency"], reps=1, tag="ci", profile="smoke",
                      runs_root=tmp_path, config=load_config(), lab_index=97,
                      fault_params={"dns_latency": {"ms": 250}})
    [run] = run_lab(opts)
    d = run.run_dir
    assert d.parent.name == "scenario=dns_latency" and d.parent.parent.name == "tag=ci"
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert (manifest["seed"], manifest["profile"], manifest["scenario"]) == (42, "smoke", "dns_latency")
    assert manifest["phases"] == {"baseline": 15.0, "fault": 15.0, "recovery": 10.0}

    [label] = pq.read_table(d / "labels.parquet").to_pylist()
    assert (label["domain"], label["target"], label["intensity"]) == ("network_dns", "dns", '{"ms": 250}')
    assert manifest["fault"] == {"scenario": "dns_latency", "labels": [
        {"domain": "network_dns", "target": "dns", "intensity": '{"ms": 250}'}]}
    assert 14e9 <= label["end_ns"] - label["start_ns"] <= 16e9

    requests = pq.read_table(d / "requests").to_pylist()
    assert len(requests) == run.summary.planned > 500
    assert {r["phase"] for r in requests} == {"baseline", "fault", "recovery"}
    ok = [r for r in requests if r["status"] == "ok"]
    assert len(ok) >= 0.9 * len(requests)

    con = duckdb.connect()
    con.sql(f"CREATE VIEW k AS SELECT * FROM read_parquet('{d}/kernel_events/*.parquet')")
    # the gateway's lookups are stamped with the trace of their request and named by pod
    stamped, pods = con.sql("SELECT count(trace_id), count(DISTINCT pod) FROM k WHERE signal = 'dns'").fetchall()[0]
    assert stamped > 100 and pods >= 1
    gw = con.sql("SELECT DISTINCT pod, namespace FROM k WHERE signal = 'dns' AND trace_id IS NOT NULL").fetchall()
    assert len(gw) == 1 and gw[0][0].startswith("gateway-") and gw[0][1] == "llm-lab"
    # the injected DNS delay is in the kernel's view of getaddrinfo, inside the fault window only
    # (a loaded host delays some lookups too: compare rates, not absolutes)
    inside, outside = con.sql(f"""
        SELECT avg((value_ns >= 250e6)::INT) FILTER (WHERE ts_ns BETWEEN {label['start_ns']} AND {label['end_ns']}),
               avg((value_ns >= 250e6)::INT) FILTER (WHERE ts_ns < {label['start_ns']} - 1e9
                                                        OR ts_ns > {label['end_ns']} + 1e9)
        FROM k WHERE signal = 'dns' AND pod LIKE 'gateway-%'""").fetchall()[0]
    assert inside >= 0.8 and outside <= 0.1, (inside, outside)
    # the spans of the same requests arrived over OTLP
    traces = {r["trace_id"] for r in requests if r["trace_id"]}
    span_traces = set(pq.read_table(d / "spans", columns=["trace_id"])["trace_id"].to_pylist())
    assert len(traces & span_traces) >= 0.9 * len(traces)
