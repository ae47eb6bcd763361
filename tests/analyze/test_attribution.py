"""Attribution on SYNTHETIC feature rows (typed in here, not measured), and on a HAND-MADE
run directory (tests/support/lab_run.py) for the evidence and the v1 document."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analyze.attribution import (
    DOMAINS,
    FEATURE_NAMES,
    PRIOR_INTERCEPT,
    PRIOR_WEIGHT,
    SIGNATURES,
    UNKNOWN,
    Model,
    attribute,
    attribute_evidence,
    attribute_window,
    collect_run,
    fit,
    fit_logistic,
    shift,
    shifts,
)
from analyze.slo import SloWindow
from runfmt.config import load_config
from runfmt.contracts import validate
from runfmt.errors import ConfigError
from tests.support.lab_run import make_run


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _x(**moved: float) -> dict[str, float]:
    """A synthetic row of feature shifts: every feature 0 but the named ones."""
    assert set(moved) <= set(FEATURE_NAMES)
    return {name: moved.get(name, 0.0) for name in FEATURE_NAMES}


def test_shift_counts_doublings_above_the_reference_lifted_by_the_floor():
    assert shift(305.0, 3.0, 10.0) == pytest.approx(math.log2(315 / 13))
    assert shift(1.0, 100.0, 10.0) == 0.0  # a fall is no evidence
    assert shift(None, 3.0, 10.0) == 0.0
    assert shift(5.0, None, 1.0) == pytest.approx(math.log2(6))
    assert shift(1e9, 0.0, 1.0) == 8.0  # capped
    assert shift(float("nan"), 1.0, 1.0) == 0.0


def test_a_signal_the_recorder_did_not_attach_moves_nothing():
    window = {"window_s": 3.0, "dns_p50_ms": 300.0, "reclaim_ms": 300.0, "runq_ms": 0.0, "runq_wakeups": 0,
              "syn_retransmits": 0, "egress_retransmits": 0, "gen_calls": 0, "requests": 0, "retried": 0,
              "gen_429": 0, "gen_5xx": 0, "connect_p95_ms": None, "tls_p50_ms": None,
              "retrieval_server_p50_ms": None}
    reference = {**window, "dns_p50_ms": 3.0, "reclaim_ms": 0.0}
    x = shifts(window, reference, {"dns": True, "mem_reclaim": True})
    assert x["dns_p50_ms"] == pytest.approx(math.log2(310 / 13)) and x["reclaim_ms_per_s"] > 6
    x = shifts(window, reference, {"dns": False, "mem_reclaim": True})
    assert x["dns_p50_ms"] == 0.0 and x["reclaim_ms_per_s"] > 6


def test_prior_model_blames_the_domain_whose_signal_moved():
    model = Model.prior()
    post = model.posteriors(_x(dns_p50_ms=4.6))
    assert post["network_dns"] == pytest.approx(_sig(PRIOR_INTERCEPT + PRIOR_WEIGHT * 4.6))
    assert post["network_dns"] > 0.9
    assert all(post[d] == pytest.approx(_sig(PRIOR_INTERCEPT)) for d in DOMAINS if d != "network_dns")
    quiet = model.posteriors(_x())
    assert quiet[UNKNOWN] == pytest.approx((1 - _sig(PRIOR_INTERCEPT)) ** len(DOMAINS))


def test_the_strongest_signal_of_a_domain_counts_once():
    model = Model.prior()
    one = model.posteriors(_x(connect_p95_ms=3.0))["network_egress"]
    many = model.posteriors(_x(connect_p95_ms=3.0, syn_retransmits_per_s=2.5, egress_retransmits_per_s=1.0))
    assert many["network_egress"] == pytest.approx(one)
    explained = dict(model.explain(_x(connect_p95_ms=3.0, syn_retransmits_per_s=2.5))["network_egress"][1])
    assert explained["connect_p95_ms"] == pytest.approx(PRIOR_WEIGHT * 3.0)
    assert explained["syn_retransmits_per_s"] == 0.0


def _window(index: int = 1) -> SloWindow:
    return SloWindow(index, 0, 3_000_000_000, 30, {"ttft_ms": {"long_fast": 20.0}}, {"ttft_ms": "fast"})


def test_two_faults_at_once_are_both_blamed_and_weak_evidence_abstains():
    stats = {"window_s": 3.0, **{k: None for k in ("dns_p50_ms", "connect_p95_ms", "tls_p50_ms",
                                                   "retrieval_server_p50_ms")},
             **{k: 0 for k in ("syn_retransmits", "egress_retransmits", "runq_ms", "runq_wakeups",
                               "reclaim_ms", "gen_calls", "gen_429", "gen_5xx", "requests", "retried")}}
    model = Model.prior()
    wa = attribute_window(_window(), stats, stats, model)
    assert wa.predicted == UNKNOWN and wa.blamed == frozenset()
    assert wa.confidence == pytest.approx(wa.posteriors[UNKNOWN])
    x = _x(dns_p50_ms=5.0, runq_us_per_wakeup=4.0)
    post = model.posteriors(x)
    assert post["network_dns"] > post["cpu_throttle"] > 0.5
    weak = model.posteriors(_x(dns_p50_ms=1.0))
    assert max(weak[d] for d in DOMAINS) < 0.5  # one doubling is not enough: abstain


def _synthetic_training(seed: int = 7):
    """600 synthetic windows: dns faults shift dns_p50_ms by ~4.5, noise elsewhere < 1.5."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for i in range(600):
        fault = i % 5 == 0
        x = _x(dns_p50_ms=float(rng.normal(4.5, 0.5) if fault else abs(rng.normal(0, 0.5))),
               runq_us_per_wakeup=float(abs(rng.normal(0, 0.7))),
               tls_handshake_p50_ms=float(abs(rng.normal(0, 0.4))))
        rows.append(x)
        truth.append(frozenset({"network_dns"}) if fault else frozenset())
    return rows, truth


def test_fit_learns_from_labelled_windows_deterministically():
    rows, truth = _synthetic_training()
    a, b = fit(rows, truth, {"runs": ["r1"]}), fit(rows, truth, {"runs": ["r1"]})
    assert a.to_dict() == b.to_dict()
    assert a.weights["network_dns"] > 0
    assert a.posteriors(_x(dns_p50_ms=4.5))["network_dns"] > 0.95
    assert a.posteriors(_x(dns_p50_ms=0.5))["network_dns"] < 0.05
    # no positive window: the prior stays
    assert a.intercepts["provider_error"] == PRIOR_INTERCEPT and a.weights["provider_error"] == PRIOR_WEIGHT
    assert a.trained["runs"] == ["r1"] and a.trained["per_domain"]["network_dns"]["positive"] == 120
    # cpu was never labelled: it keeps the prior, and 1.5 doublings of noise do not blame it
    assert a.posteriors(_x(runq_us_per_wakeup=1.5))["cpu_throttle"] == pytest.approx(_sig(-4 + 1.5 * 1.5))


def test_weights_stay_non_negative_when_the_data_points_the_other_way():
    X = np.column_stack([np.ones(200), np.r_[np.full(100, 3.0), np.zeros(100)]])
    y = np.r_[np.zeros(100), np.ones(100)]  # the signal rises only where the fault is absent
    theta = fit_logistic(X, y, np.array([-4.0, 1.5]), np.array([2.0, 1.0]), np.array([False, True]))
    assert theta[1] == 0.0 and theta[0] > -4.0


def test_model_round_trip_and_a_bad_model_file(tmp_path):
    rows, truth = _synthetic_training()
    model = fit(rows, truth)
    model.save(tmp_path / "m.json")
    again = Model.load(tmp_path / "m.json")
    assert again.intercepts == pytest.approx(model.intercepts)
    assert again.posteriors(_x(dns_p50_ms=3.0)) == pytest.approx(model.posteriors(_x(dns_p50_ms=3.0)), abs=1e-5)
    assert set(model.to_dict()["signatures"]) == set(DOMAINS) == set(SIGNATURES)
    (tmp_path / "bad.json").write_text(json.dumps({"version": 1, "intercepts": {}}))
    with pytest.raises(ConfigError, match="not an attribution model"):
        Model.load(tmp_path / "bad.json")


def test_hand_made_dns_fault_is_attributed_with_evidence_and_validates(tmp_path):
    run_dir = make_run(tmp_path, "dns-1")
    ev = collect_run(run_dir, load_config())
    # reference = the manifest's 12 s baseline phase; every lookup there took 2-3 ms
    assert ev.reference["dns_lookups"] == 120 and 2.0 <= ev.reference["dns_p50_ms"] <= 3.0
    ra = attribute_evidence(ev, Model.prior())
    predicted = {wa.window.index: wa.predicted for wa in ra.windows}
    # the fault phase starts at 12 s, in window 5 (TTFT counts at the first token)
    assert predicted == {5: "network_dns", 6: "network_dns", 7: "network_dns", 8: "network_dns", 9: UNKNOWN}
    docs = ra.documents()  # validates each against v1/incident-attribution
    doc = docs[1]  # window 6, the first wholly in the fault phase
    assert doc["predicted_fault_domain"] == "network_dns" and doc["service"] == "rag-gateway"
    assert doc["evidence"][0] == {"signal": "dns_p50_ms", "value": 400.0, "source": "ebpf"}
    assert doc["slo_impact"]["sli"] in ("ttft_ms", "request_latency_ms")
    assert doc["slo_impact"]["window_minutes"] == 1
    assert {"signal": "burn_window_s", "value": 6.0, "source": "application"} in doc["evidence"]
    top = doc["fault_hypotheses"][0]
    assert top["domain"] == "network_dns"
    assert top["evidence"][0] == "prior log-odds -4.00"
    assert "(strongest signal)" in top["evidence"][1] and top["evidence"][1].startswith("dns_p50_ms 400 ms")
    assert len(doc["fault_hypotheses"]) == len(DOMAINS) + 1 and len(doc["trace_ids"]) == 20
    validate("v1/incident-attribution", docs[-1])


def test_attribute_marks_runs_the_model_was_trained_on(tmp_path):
    make_run(tmp_path, "dns-1")
    model = Model.prior()
    model.trained = {"runs": ["dns-1"]}
    result = attribute([tmp_path], load_config(), model)
    assert result.runs[0].seen_in_training
    assert result.to_dict()["runs"][0]["seen_in_training"] is True


def test_attribute_cli_writes_contract_documents(tmp_path, sloan):
    make_run(tmp_path, "dns-1")
    r = sloan("attribute", "--runs", tmp_path, "-o", "-")
    assert r.exit_code == 0, r.output
    docs = [json.loads(line) for line in r.output.splitlines()]
    assert [d["predicted_fault_domain"] for d in docs] == ["network_dns"] * 4 + [UNKNOWN]
    for d in docs:
        validate("v1/incident-attribution", d)
    r = sloan("attribute", "--runs", tmp_path, "--model", tmp_path / "none.json")
    assert r.exit_code == 1 and "error: model" in r.output and "cannot read" in r.output


def test_sloan_attribute_uses_the_shipped_model_and_says_so(tmp_path, sloan):
    make_run(tmp_path, "dns-1")
    first = sloan("attribute", "--runs", tmp_path).output.splitlines()[0]
    assert first.startswith("model: shipped config/model.json: fitted on ") and "test P " in first
    assert sloan("attribute", "--runs", tmp_path, "--model", "prior").output.startswith(
        "model: untrained prior (--model prior)")


def test_the_shipped_model_carries_its_provenance():
    shipped = Model.named(None)
    t = shipped.trained
    assert t["source"] == "fit" and len(t["runs"]) > 0 and t["split"]["seed"] == 42
    assert len(t["git_sha"]) == 40
    assert {"precision", "recall", "f1", "test_runs", "exploratory"} <= set(t["score"])
    assert shipped != Model.prior()


def test_a_handshake_that_waited_on_reclaim_is_not_evidence_of_the_path():
    """sql/attr_window_stats.sql: the TLS median of a window leaves out the generation calls
    whose handshake overlapped a reclaim stall of a lab pod, and counts them apart."""
    import duckdb
    import pyarrow as pa

    from runfmt import queries
    from runfmt.schema import KERNEL_EVENTS, KERNEL_HIST

    ms = 1_000_000
    con = duckdb.connect()
    con.from_arrow(pa.table({"window_no": [0, 1], "lo_ns": [0, 0], "hi_ns": [10, 1000 * ms]})).create_view(
        "attr_windows")
    con.from_arrow(pa.table({"pod": pa.array(["gateway-1"], pa.string())})).create_view("attr_pods")
    con.from_arrow(pa.table({"done_ns": pa.array([], pa.int64()), "attempts": pa.array([], pa.float64())})
                   ).create_view("attr_requests")
    # three handshakes at 100, 300 and 500 ms: 2 ms, 900 ms, 3 ms; a 50 ms stall at 320 ms
    con.from_arrow(pa.table({
        "start_ns": [100 * ms, 300 * ms, 500 * ms], "generation": [True] * 3,
        "tls_start_ns": [100 * ms, 300 * ms, 500 * ms], "tls_ms": [2.0, 900.0, 3.0],
        "http_status": [200] * 3, "error": [False] * 3, "duration_ms": [50.0] * 3,
        "connect_ms": pa.array([None] * 3, pa.float64()), "server_address": ["backend.lab"] * 3,
        "peer_address": ["10.0.0.2"] * 3, "peer_port": [8443] * 3})).create_view("attr_calls")
    stall = {f.name: [None] for f in KERNEL_EVENTS}
    stall.update(ts_ns=[370 * ms], signal=["mem_reclaim"], value_ns=[50 * ms], pod=["backend-1"])
    con.from_arrow(pa.table(stall, schema=KERNEL_EVENTS)).create_view("kernel_events")
    con.from_arrow(KERNEL_HIST.empty_table()).create_view("kernel_hist")
    row = {r["window_no"]: r for r in queries.run(con, "attr_window_stats").to_pylist()}[1]
    assert row["gen_calls"] == 3 and row["tls_under_reclaim"] == 1
    assert row["tls_p50_ms"] == pytest.approx(2.5)  # the median of 2 and 3 ms: the 900 ms one left out
    assert row["reclaims"] == 1
