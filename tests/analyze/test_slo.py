"""SLO math on HAND-MADE data: thresholds (lower-is-worse tokens/s included), the scaled
burn windows, the multi-window rule, and v1 SLO events of a hand-made run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analyze.slo import (
    BurnScaling,
    Thresholds,
    burn_windows,
    default_budget,
    evaluate,
    evaluate_run,
    thresholds_from_config,
    ttft_observed_ns,
    workload_of,
)
from runfmt.config import load_config
from runfmt.contracts import validate
from runfmt.errors import ConfigError
from tests.support.lab_run import GATEWAY_POD, NAMESPACE, NODE, T0, make_run, paged_late

S = 1_000_000_000


def test_higher_is_worse_boundaries_are_inclusive():
    t = thresholds_from_config(load_config())["ttft_ms"]
    assert t == Thresholds(500.0, 1000.0, False)
    got = t.statuses(np.array([0.0, 499.99, 500.0, 999.99, 1000.0, 5000.0, np.nan]))
    assert list(got) == ["ok", "ok", "warning", "warning", "breach", "breach", None]


def test_tokens_per_second_is_lower_is_worse():
    t = thresholds_from_config(load_config())["token_throughput_tps"]
    assert t == Thresholds(30.0, 10.0, True, page=False)  # reported, never paging by default
    got = t.statuses(np.array([100.0, 30.01, 30.0, 10.01, 10.0, 0.0]))
    assert list(got) == ["ok", "ok", "warning", "warning", "breach", "breach"]
    assert t.status(10.0) == "breach" and t.status(31.0) == "ok"


def test_error_requests_breach_error_rate_and_budget_comes_from_config():
    cfg = load_config()
    t = thresholds_from_config(cfg)["error_rate"]
    assert list(t.statuses(np.array([0.0, 1.0]))) == ["ok", "breach"]
    assert default_budget(cfg) == 0.02
    with pytest.raises(ConfigError, match="no 'slo' section"):
        thresholds_from_config({})


def test_windows_scale_with_the_run_and_keep_the_workbook_ratios():
    smoke = BurnScaling(40.0)
    assert smoke.seconds("long_slow") == pytest.approx(40.0)  # 6 h -> the run
    assert smoke.seconds("short_slow") == pytest.approx(40 / 12)  # 30 m
    assert smoke.seconds("long_fast") == pytest.approx(40 / 6)  # 1 h
    assert smoke.seconds("short_fast") == pytest.approx(40 / 72)  # 5 m
    assert smoke.step_s == pytest.approx(40 / 12)
    full = BurnScaling(1500.0)
    assert full.seconds("short_slow") == pytest.approx(125.0)
    d = full.to_dict()
    assert d["stands_for"] == {"long_slow": "6h", "short_slow": "30m", "long_fast": "1h", "short_fast": "5m"}
    assert d["windows_s"]["long_fast"] == 250.0


def _burst(bad_from_s: float, bad_to_s: float, run_s: float = 72.0):
    """One request per 0.1 s for the whole run, ending at k * 0.1 + 0.05 s; bad inside [from, to)."""
    t = np.arange(int(run_s * 10)) * 0.1 + 0.05
    done = T0 + np.round(t * S).astype(np.int64)
    bad = (t >= bad_from_s) & (t < bad_to_s)
    return done, {"ttft_ms": bad}, {"ttft_ms": np.ones(t.size, bool)}


def test_multi_window_rule_on_a_hand_made_burst():
    # run 72 s: 6h -> 72 s, 30m -> 6 s, 1h -> 12 s, 5m -> 1 s; evaluated every 6 s
    done, bad, measured = _burst(30.0, 42.0)
    windows = burn_windows(done, bad, measured, T0, BurnScaling(72.0), budget=0.02)
    assert len(windows) == 12 and [w.requests for w in windows] == [60] * 12
    by_end = {round((w.end_ns - T0) / S): w for w in windows}
    # end 30 s: nothing bad yet
    assert by_end[30].paging == {} and by_end[30].burn["ttft_ms"]["long_fast"] == 0.0
    # end 36 s: 1h window [24, 36) 60 of 120 bad -> 0.5 / 0.02 = 25; 5m [35, 36) all bad -> 50
    b = by_end[36].burn["ttft_ms"]
    assert b["long_fast"] == pytest.approx(25.0) and b["short_fast"] == pytest.approx(50.0)
    # 6h [0, 36): 60 of 360 -> 8.33 >= 6; 30m [30, 36): all bad -> 50
    assert b["long_slow"] == pytest.approx(60 / 360 / 0.02) and b["short_slow"] == pytest.approx(50.0)
    assert by_end[36].paging == {"ttft_ms": "fast+slow"} and by_end[36].violating
    # end 42 s: 1h [30, 42) all bad -> 50; 6h [0, 42) 120 of 420 -> 14.29
    assert by_end[42].burn["ttft_ms"]["long_slow"] == pytest.approx(120 / 420 / 0.02)
    assert by_end[42].paging == {"ttft_ms": "fast+slow"}
    # end 48 s: the long windows still burn (1h 25, 6h 12.5) but both short ones are clean
    b = by_end[48].burn["ttft_ms"]
    assert b["long_fast"] == pytest.approx(25.0) and b["long_slow"] == pytest.approx(12.5)
    assert b["short_fast"] == 0.0 and b["short_slow"] == 0.0 and by_end[48].paging == {}


def test_slow_rule_alone_fires_on_a_low_steady_burn():
    # 15 % bad everywhere: burn 7.5 >= 6 in every window, < 14.4 so never fast
    t = np.arange(720) * 0.1 + 0.05
    done = T0 + np.round(t * S).astype(np.int64)
    bad = (np.arange(720) % 20) < 3
    windows = burn_windows(done, {"x": bad}, {"x": np.ones(720, bool)}, T0, BurnScaling(72.0), 0.02)
    assert all(w.paging == {"x": "slow"} for w in windows[1:])
    assert windows[5].burn["x"]["long_slow"] == pytest.approx(7.5)


def test_a_window_without_measured_requests_burns_zero():
    done = np.array([T0 + 50 * S], np.int64)
    windows = burn_windows(done, {"x": np.array([True])}, {"x": np.array([False])}, T0,
                           BurnScaling(72.0), 0.02)
    assert all(w.burn["x"][name] == 0.0 for w in windows for name in w.burn["x"])
    assert not any(w.violating for w in windows)


def test_a_ttft_breach_counts_once_it_is_certain():
    # sent at 0 s: a first token after 0.3 s (ok), after 5 s (breach: known at 1 s), none
    # yet counted as a breach at 1 s only when the request is ok and its TTFT breached;
    # a request never sent (-1) has no certain moment and keeps its first-token time
    sent = [T0, T0, T0 + 2 * S, -1]
    first = np.array([T0 + S * 3 // 10, T0 + 5 * S, T0 + 2 * S + S // 2, T0 + 9 * S], np.int64)
    cols = {"sent_ns": np.array(sent, dtype=object), "first_token_ns": first,
            "ttft_ms_status": np.array(["ok", "breach", "warning", None], dtype=object)}
    got = ttft_observed_ns(cols, 1000.0)
    assert list(got) == [T0 + S * 3 // 10, T0 + S, T0 + 2 * S + S // 2, T0 + 9 * S]


def test_a_stall_pages_while_the_requests_wait():
    # 20 requests/s; from 20 s every request waits 10 s for its first token. Observed at
    # the first token, nothing is seen until 30 s; counted once certain (1 s after it was
    # sent, from 21 s), the stall pages in the window after the one it began in
    sent = T0 + np.arange(0, 36 * S, S // 20, dtype=np.int64)
    ttft_ms = np.where(sent >= T0 + 20 * S, 10_000.0, 200.0)
    first = sent + (ttft_ms * 1e6).astype(np.int64)
    t = thresholds_from_config(load_config())["ttft_ms"]
    status = t.statuses(ttft_ms)
    bad = {"ttft_ms": status == "breach"}
    measured = {"ttft_ms": np.ones(len(sent), bool)}
    scaling = BurnScaling(36.0)  # 3 s windows: the stall starts in window 7, [18 s, 21 s)
    late = burn_windows(first, bad, measured, T0, scaling, 0.02, observed_ns={"ttft_ms": first})
    now = burn_windows(first, bad, measured, T0, scaling, 0.02, observed_ns={
        "ttft_ms": ttft_observed_ns({"sent_ns": sent.astype(object), "first_token_ns": first,
                                     "ttft_ms_status": status}, t.breach)})
    assert min(w.index for w in late if w.violating) == 11  # [30 s, 33 s)
    assert min(w.index for w in now if w.violating) == 8  # [21 s, 24 s)


def test_workload_from_a_kubelet_pod_name():
    assert workload_of("gateway-9cf7fa27f5", "rag-gateway") == "gateway"
    assert workload_of("web-7d4b9c8f6d-x2k9p", "web") == "web"
    assert workload_of(None, "rag-gateway") == "rag-gateway"


def test_hand_made_run_pages_in_its_fault_and_its_events_validate(tmp_path):
    run = evaluate_run(make_run(tmp_path, "dns-1"), load_config())
    assert run.scaling.run_s == 36.0 and math.isclose(run.scaling.step_s, 3.0)
    paging = [(round((w.start_ns - T0) / S), sorted(w.paging)) for w in run.violating]
    # ttft 1050 ms and e2e 1650 ms during the fault phase [12 s, 24 s): both breach, but
    # only TTFT pages (E2E of a streaming completion is reported, not paged on, by default).
    # TTFT counts at the first token, so it pages in the window the fault starts in, not
    # only once its slow requests have ended
    assert paging[0] == (12, ["ttft_ms"])
    assert all(12 <= start < 27 for start, _ in paging)
    summary = run.summary()
    assert summary["ttft_ms"]["breach"] == 120 and summary["token_throughput_tps"]["breach"] == 0
    events = list(run.events())
    assert len(events) == 360 * 5  # ttft, tpot, errors, e2e, tokens/s
    for e in events[:50] + events[-50:]:
        validate("v1/slo-event", e)
    e = events[0]
    assert (e["cluster"], e["namespace"], e["workload"], e["service"]) == (NODE, NAMESPACE, "gateway",
                                                                          "rag-gateway")
    assert run.workload.pods == (GATEWAY_POD,)
    assert e["trace_id"] and e["request_id"] == "r-0000" and e["labels"]["phase"] == "baseline"


def test_cli_writes_contract_events_and_json(tmp_path, sloan):
    run_dir = make_run(tmp_path, "dns-1")
    r = sloan("slo", "--runs", str(run_dir), "-o", "-")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == 1800
    validate("v1/slo-event", json.loads(lines[-1]))
    r = sloan("slo", "--runs", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["runs"][0]["scaling"]["windows_s"]["long_fast"] == 6.0
    assert doc["runs"][0]["violating_windows"] == [5, 6, 7, 8, 9]


def test_cli_names_a_missing_run(tmp_path, sloan):
    r = sloan("slo", "--runs", str(tmp_path / "nope"))
    assert r.exit_code == 1
    assert f"error: {tmp_path / 'nope'} does not exist" in r.output


def test_cli_rejects_a_budget_outside_zero_one(tmp_path, sloan):
    r = sloan("slo", "--runs", str(make_run(tmp_path, "dns-1")), "--budget", "1.5")
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    assert "--budget" in r.output


def test_e2e_pages_when_the_config_says_so(tmp_path):
    cfg = load_config()
    cfg["slo"]["request_latency_ms"]["page"] = True
    run = evaluate_run(make_run(tmp_path, "dns-1"), cfg)
    assert any("request_latency_ms" in w.paging for w in run.violating)


DATASET = Path(__file__).resolve().parents[2] / "datasets" / "labeled"


def test_the_committed_healthy_lab_never_pages():
    """No window of a baseline run, and no window of another run's baseline phase, pages
    with the default SLOs (docs/slo.md: how they were chosen)."""
    runs = evaluate([DATASET], load_config()).runs
    assert runs
    for run in runs:
        baseline_end = run.start_ns + int(next(iter(run.info.phases.values())) * 1e9)
        for w in run.windows:
            if run.info.scenario == "baseline" or w.end_ns <= baseline_end:
                assert not w.paging, f"{run.info.scenario} {run.info.run_id} window {w.index} pages {w.paging}"


def test_every_committed_fault_run_pages_within_one_window_of_injection():
    """The committed set records every fault at its default setting: each of its fault runs
    pages in the window its fault was injected in or the next one (docs/slo.md). The
    severe settings: tests/replay/test_severe_settings.py."""
    runs = [r for r in evaluate([DATASET], load_config()).runs if r.info.scenario != "baseline"]
    assert runs
    late = [msg for run in runs if (msg := paged_late(run))]
    assert not late, "; ".join(late)


def test_a_request_never_sent_is_an_error_and_breaks_nothing(tmp_path):
    """A request the client dropped has no sent_ns (null): it counts as an error, and the
    TTFT timing of the others is unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_dir = make_run(tmp_path, "dns-1")
    part = next((run_dir / "requests").glob("*.parquet"))
    t = pq.read_table(part)
    sent, status = t.column("sent_ns").to_pylist(), t.column("status").to_pylist()
    sent[0], status[0] = None, "dropped_by_client"
    t = t.set_column(t.schema.get_field_index("sent_ns"), "sent_ns", pa.array(sent, pa.int64()))
    t = t.set_column(t.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
    pq.write_table(t, part)
    run = evaluate_run(run_dir, load_config())
    assert run.summary()["error_rate"]["breach"] == 1
    assert [(round((w.start_ns - T0) / S), sorted(w.paging)) for w in run.violating][0] == (12, ["ttft_ms"])
