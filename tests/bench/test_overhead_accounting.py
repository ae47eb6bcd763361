"""The overhead benchmark's validity rule, direct accounting and per-hook figures
(bench/overhead.py), on GENERATED data: every sample, resources row and BPF
program record here is made up or drawn from a seeded generator; none is measured.
The map and program names are the shapes bpftool prints for these objects."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import overhead
from bench.overhead import (
    AA_MAX_BIAS_PCT,
    BpfStats,
    Summary,
    Validity,
    _summaries,
    acceptance,
    control_validity,
    direct_figures,
    half_width_pct,
    hook_costs,
    hook_of,
    inside_window,
    machine_pct_to_workload_pct,
    manifest_overheads,
    median_ci,
    net_of_control,
    ns_per_context_switch,
    object_of,
    pairs_needed,
    primary_metric,
    prog_deltas,
    read_resources,
    render,
    signal_costs,
    summarize,
)
from runfmt.schema import RESOURCES

# -- the validity rule ---------------------------------------------------------


def test_control_within_half_a_percent_holding_zero_is_valid():
    v = control_validity(Summary(20, 0.3, -0.6, 0.9))
    assert v == Validity(True, "valid", "A/A median +0.30 % within ±0.5 %, CI95 [-0.60, +0.90] % holds 0")


def test_control_median_outside_half_a_percent_is_biased():
    # the numbers this rule was written for: 20 pairs x 10 s of machine CPU on the dev VM
    v = control_validity(Summary(20, 2.60, -0.62, 5.68))
    assert not v.valid
    assert v.headline == "NOT VALID: control biased"
    assert v.reason == "A/A median +2.60 % lies outside ±0.5 %"


def test_control_ci_not_holding_zero_is_biased_even_with_a_small_median():
    v = control_validity(Summary(20, 0.4, 0.1, 0.7))
    assert (v.valid, v.headline) == (False, "NOT VALID: control biased")
    assert v.reason == "A/A CI95 [+0.10, +0.70] % does not hold 0"


def test_control_failing_both_says_both():
    v = control_validity(Summary(20, -1.2, -2.0, -0.5))
    assert v.reason == "A/A median -1.20 % lies outside ±0.5 %; A/A CI95 [-2.00, -0.50] % does not hold 0"


def test_a_small_control_that_passes_says_it_is_exploratory():
    v = control_validity(Summary(2, -0.46, -3.59, 2.66))
    assert v.valid and v.headline == "valid, exploratory (2 A/A pairs: a wide CI95 holds 0 easily)"


@pytest.mark.parametrize("median", [AA_MAX_BIAS_PCT, -AA_MAX_BIAS_PCT])
def test_control_median_on_the_limit_is_still_valid(median):
    assert control_validity(Summary(20, median, -1.0, 1.0)).valid


def test_no_control_or_one_pair_cannot_vouch_for_the_run():
    none = control_validity(None)
    assert (none.valid, none.headline) == (False, "NOT VALID: no usable control")
    assert "--aa-pairs 0" in none.reason
    one = control_validity(Summary(1, 0.1, float("nan"), float("nan")))
    assert (one.valid, one.headline, one.reason) == (False, "NOT VALID: no usable control", "1 A/A pair: no CI95")


def generated_aa(n: int, bias: float, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated, not measured: per pair a drifting baseline, arms with their own noise;
    the first arm scaled by (1 + bias)."""
    rng = np.random.default_rng(seed)
    base = 20.0 * (1 + rng.normal(0, 0.05, n))
    return base * (1 + bias) * (1 + rng.normal(0, noise, n)), base * (1 + rng.normal(0, noise, n))


def test_an_unbiased_control_passes_the_rule_most_of_the_time():
    # generated: 0.8 % noise per run, 20 pairs; the rule should rarely reject an honest control
    passed = sum(control_validity(summarize(*generated_aa(20, 0.0, 0.008, 100 + s), resamples=2000, seed=s)).valid
                 for s in range(100))
    assert passed >= 80


def test_a_biased_control_fails_the_rule():
    # generated: the first arm 2 % higher (e.g. it always ran after a tool), same noise
    s = summarize(*generated_aa(20, 0.02, 0.008, 7), seed=42)
    v = control_validity(s)
    assert not v.valid and v.headline == "NOT VALID: control biased"


def test_half_width_is_the_larger_side():
    assert half_width_pct(Summary(20, 0.5, -0.5, 0.9)) == pytest.approx(1.0)
    assert math.isnan(half_width_pct(Summary(1, 0.5, float("nan"), float("nan"))))


def test_pairs_needed_follows_the_spread_of_the_ratios():
    # generated: A/A ratios with a 1.8 % spread need ~20 pairs for ±1 %, with 4.5 % ~120
    rng = np.random.default_rng(11)
    assert 14 <= pairs_needed(1 + rng.normal(0, 0.018, 400)) <= 28
    assert 90 <= pairs_needed(1 + rng.normal(0, 0.045, 400)) <= 160
    assert pairs_needed([1.0, 1.01]) is None
    assert pairs_needed([1.0, 1.0, 1.0]) == 2


# -- direct accounting ---------------------------------------------------------


def test_inside_window_wants_the_whole_interval():
    s, e = 10_000_000_000, 20_000_000_000
    assert inside_window(12_000_000_000, 1.0, s, e)
    assert not inside_window(10_500_000_000, 1.0, s, e)  # began before the window
    assert not inside_window(20_000_000_001, 1.0, s, e)  # ended after it
    assert inside_window(20_000_000_000, 10.0, s, e)


def test_signal_costs_in_every_column_shape():
    assert signal_costs({"overhead_pct": 1.0}) == {}
    assert signal_costs({"signal_cost_s": {"dns": 0.01, "runqueue": 0.02}}) == {"dns": 0.01, "runqueue": 0.02}
    assert signal_costs({"signal_cost_s": [("dns", 0.01), ("tls", None)]}) == {"dns": 0.01}  # Arrow map
    assert signal_costs({"signal_cost_s": [{"key": "dns", "value": 0.5}]}) == {"dns": 0.5}
    assert signal_costs({"signal_cost_s.tls": 0.03, "signal_cost_s_connect": 0.04, "other": 9.0}) == \
        {"tls": 0.03, "connect": 0.04}


def generated_windows(n: int, seed: int, per_signal: bool = False) -> list[dict]:
    """Generated resources rows of a 2-CPU host: 1 s intervals, overhead around 1.5 %."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cpu = 0.02 + rng.normal(0, 0.002)  # process CPU-s in the second
        bpf_ns = int(0.01e9 + rng.normal(0, 1e6))
        row = {"ts_ns": (i + 1) * 10**9, "interval_s": 1.0, "cpu_user_s": cpu * 0.7, "cpu_sys_s": cpu * 0.3,
               "bpf_run_ns": bpf_ns, "bpf_runs": bpf_ns // 400,
               "overhead_pct": (cpu + bpf_ns / 1e9) / 2 * 100,
               "kernel_overhead_pct": (cpu * 0.6 + bpf_ns / 1e9) / 2 * 100,
               "intake_overhead_pct": cpu * 0.4 / 2 * 100}
        if per_signal:
            row["signal_cost_s"] = [("runqueue", 0.004), ("dns", 0.001)]
        rows.append(row)
    return rows


def test_direct_figures_pool_windows():
    d = direct_figures(generated_windows(60, seed=1, per_signal=True), ncpu=2, resamples=2000)
    assert d["windows"] == 60
    assert d["total"]["n"] == 60
    assert 1.3 < d["total"]["median"] < 1.7  # (0.02 + 0.01) / 2 CPUs
    assert d["total"]["low"] <= d["total"]["median"] <= d["total"]["high"]
    assert d["bpf"]["median"] == pytest.approx(0.5, abs=0.1)  # 10 ms of 2 CPU-s
    assert d["process"]["median"] == pytest.approx(1.0, abs=0.15)
    assert d["kernel"]["median"] + d["intake"]["median"] == pytest.approx(d["total"]["median"], abs=0.1)
    assert d["bpf_ns_per_run"] == pytest.approx(400, rel=0.01)
    assert d["per_signal"]["runqueue"]["median"] == pytest.approx(0.2)  # 4 ms of 2 CPU-s
    assert d["per_signal"]["dns"]["median"] == pytest.approx(0.05)


def test_direct_figures_without_the_newer_columns():
    rows = [{k: v for k, v in r.items() if k not in ("kernel_overhead_pct", "intake_overhead_pct")}
            for r in generated_windows(5, seed=2)]
    d = direct_figures(rows, ncpu=2, resamples=500)
    assert d["kernel"] == {"n": 0, "median": None, "low": None, "high": None, "mean": None}
    assert d["per_signal"] == {}
    assert d["total"]["n"] == 5


def test_direct_figures_of_no_windows():
    d = direct_figures([], ncpu=2)
    assert d["windows"] == 0 and d["total"]["median"] is None and d["bpf_ns_per_run"] is None


def test_median_ci_of_one_value_has_no_interval():
    assert median_ci([2.0]) == {"n": 1, "median": 2.0, "low": None, "high": None, "mean": 2.0}
    assert median_ci([None, float("nan")])["n"] == 0


def test_manifest_overheads_over_runs():
    # made up: two manifests' `overhead` sections (capture/accounting.py's shape) and one run without it
    docs = [{"method": "direct", "pct": 1.2, "per_signal": {
                "runqueue": {"pct": 0.30, "bpf_run_s": 0.02, "bpf_runs": 100_000},
                "dns": {"pct": 0.05, "bpf_run_s": 0.001, "bpf_runs": 400}}},
            {"method": "direct", "pct": 1.4, "per_signal": {
                "runqueue": {"pct": 0.34, "bpf_run_s": 0.03, "bpf_runs": 100_000}}},
            None]
    m = manifest_overheads(docs, resamples=500)
    assert m["runs"] == 2 and m["methods"] == ["direct"]
    assert m["pct"]["median"] == pytest.approx(1.3)
    assert m["per_signal"]["runqueue"]["pct"]["median"] == pytest.approx(0.32)
    assert m["per_signal"]["runqueue"]["bpf_ns_per_run"] == pytest.approx(250.0)
    assert m["per_signal"]["dns"]["pct"]["n"] == 1
    assert manifest_overheads([None])["runs"] == 0


def test_share_of_the_machine_as_share_of_the_workload():
    # 1 % of 2 CPUs = 0.02 CPU-s/s; the workload used 0.5 CPU-s/s: 4 % of it
    assert machine_pct_to_workload_pct(1.0, 2, 0.5) == pytest.approx(4.0)
    assert machine_pct_to_workload_pct(None, 2, 0.5) is None
    assert machine_pct_to_workload_pct(1.0, 2, 0.0) is None


def test_read_resources_reads_every_part_in_time_order(tmp_path):
    rows = generated_windows(4, seed=3)
    (tmp_path / "resources").mkdir()
    for i, part in enumerate((rows[2:], rows[:2])):
        table = pa.Table.from_pylist([{**r, "rss_bytes": 1, "events": 0, "shed_level": 0} for r in part],
                                     schema=RESOURCES)
        pq.write_table(table, tmp_path / "resources" / f"part-{i:05d}.parquet")
    back = read_resources(tmp_path)
    assert [r["ts_ns"] for r in back] == [r["ts_ns"] for r in rows]
    assert back[0]["overhead_pct"] == pytest.approx(rows[0]["overhead_pct"])


# -- BPF programs per hook -------------------------------------------------------


@pytest.mark.parametrize("maps, obj", [
    (["runqueue.rodata", "seen_delay"], "runqueue"),
    (["last_steal", "cpu_stea.rodata", "hists", "cpu_stea.bss"], "cpu_steal"),
    (["mem_recl.rodata", "target_cgroup", "starts"], "mem_reclaim"),
    ([".data.tune", "retransm.bss", "retransm.rodata", "events"], "retransmit"),
    (["trace_slot_by_t", "tracectx.rodata"], "tracectx"),
    (["runqlat_.rodata", "cgroup_map", "start"], "runqlat"),
    (["qtime", "usecs"], None),  # bpftrace's maps: no object
    ([], None),
])
def test_object_of_reads_the_internal_maps(maps, obj):
    assert object_of(maps) == obj


@pytest.mark.parametrize("name, hook", [
    ("sched_wakeup", "sched_wakeup"),
    ("sched_wakeup_ne", "sched_wakeup_new"),  # bpftool's 15 characters
    ("sched_wakeup_new", "sched_wakeup_new"),
    ("sched_switch", "sched_switch"),
    ("sched_switch_raw", "sched_switch"),
    ("handle_sched_sw", "handle_sched_sw"),  # cut too short to tell: left as it is
    ("handle_sched_switch", "sched_switch"),
    ("getaddrinfo_enter", "getaddrinfo_enter"),
])
def test_hook_of_program_names(name, hook):
    assert hook_of(name) == hook


def test_prog_deltas_leave_out_programs_not_there_at_both_ends():
    assert prog_deltas({1: (100, 2), 2: (50, 1)}, {1: (400, 5), 3: (9, 9)}) == {1: (300, 3)}


def records() -> list[dict]:
    """Made-up per-window program records of three tools on the scheduler hooks."""
    out = []
    for window in (1, 2):
        out += [
            {"tool": "slocap", "hook": "sched_wakeup", "object": "runqueue", "run_time_ns": 50_000, "run_cnt": 100,
             "window": window},
            {"tool": "slocap", "hook": "sched_switch", "object": "runqueue", "run_time_ns": 80_000, "run_cnt": 200,
             "window": window},
            {"tool": "slocap", "hook": "sched_switch", "object": "cpu_steal", "run_time_ns": 20_000, "run_cnt": 200,
             "window": window},
            {"tool": "slocap", "hook": "getaddrinfo_enter", "object": "dns", "run_time_ns": 3_000, "run_cnt": 1,
             "window": window},
            {"tool": "runqlat", "hook": "sched_wakeup", "object": "runqlat", "run_time_ns": 60_000, "run_cnt": 100,
             "window": 10 + window},
            {"tool": "runqlat", "hook": "sched_switch", "object": "runqlat", "run_time_ns": 100_000, "run_cnt": 200,
             "window": 10 + window},
        ]
    out.append({"tool": "bpftrace", "hook": "sched_switch", "object": None, "run_time_ns": 180_000, "run_cnt": 200,
                "window": 20})
    return out


def test_hook_costs_pool_windows_and_keep_our_objects_apart():
    costs = hook_costs(records())
    ours = costs["slocap"]
    assert ours["sched_switch"] == {"ns": 160_000, "runs": 400, "windows": 2, "ns_per_run": 400.0}
    assert ours["sched_switch (cpu_steal)"]["ns_per_run"] == 100.0
    assert ours["getaddrinfo_enter (dns)"]["runs"] == 2
    assert costs["runqlat"]["sched_switch"]["ns_per_run"] == 500.0
    assert costs["bpftrace"]["sched_switch"]["windows"] == 1


def test_ns_per_context_switch_adds_wakeups_to_switches():
    costs = hook_costs(records())
    # runqueue: (100k wakeup + 160k switch) / 400 switches
    assert ns_per_context_switch(costs["slocap"], [None]) == pytest.approx(650.0)
    # with cpu_steal's program on the same switches
    assert ns_per_context_switch(costs["slocap"]) == pytest.approx(750.0)
    assert ns_per_context_switch(costs["runqlat"]) == pytest.approx(800.0)
    assert ns_per_context_switch(costs["bpftrace"]) == pytest.approx(900.0)
    assert ns_per_context_switch({}) is None


# -- latency, pairs and the printed verdict -------------------------------------------


PRIMARY = primary_metric("lab")


def fake_run(experiment: str, pair: int, arm: str, position: int, cpu: float, ttft: float | None) -> dict:
    """A made-up run with every field render() reads."""
    return {"experiment": experiment, "pair": pair, "arm": arm, "position": position,
            "own_cpu_s": cpu, "own_per_load": cpu / 4.0, "load_cpu_s": 4.0, "load_context_switches": 60_000,
            "machine_cpu_s": cpu * 1.5, "wall_s": 37.0, "workload_cpu_s": cpu,
            "steal_s": 0.0, "context_switches": 300_000, "tool_cpu_s": None, "failures": 0,
            "foreign_bpf_programs": [], "ttft_p95_ms": ttft, "e2e_p95_ms": None if ttft is None else ttft * 8,
            **({"tool": {"events_seen": 1000, "dropped": 0, "shedding_actions": [], "mode": "core_full",
                         "overhead_pct_mean": 1.2, "recorder_cpu_s": 1.0, "bpf_stats": True}, "tool_cpu_s": 0.5}
               if experiment == "slocap" and arm == "with" else {})}


def test_summaries_pair_arms_and_skip_missing_latency():
    runs = [fake_run("slocap", 0, "with", 1, 10.5, 880.0), fake_run("slocap", 0, "without", 2, 10.0, 800.0),
            fake_run("slocap", 1, "without", 3, 10.0, None), fake_run("slocap", 1, "with", 4, 10.4, 850.0)]
    cpu, rows = _summaries(runs, "slocap", [PRIMARY], resamples=200, seed=1)
    assert cpu[PRIMARY].n == 2 and cpu[PRIMARY].median_pct == pytest.approx(4.5)
    lat, _ = _summaries(runs, "slocap", ["ttft_p95_ms"], resamples=200, seed=1)
    assert lat["ttft_p95_ms"].n == 1 and lat["ttft_p95_ms"].median_pct == pytest.approx(10.0)
    assert [r["first"] for r in rows] == ["with", "without"]


def _cpu_pairs(runs: list[dict], experiment: str) -> list[dict]:
    pairs: dict[int, dict] = {}
    for r in runs:
        if r["experiment"] == experiment:
            pairs.setdefault(r["pair"], {})[r["arm"]] = r[PRIMARY]
    return [pairs[i] for i in sorted(pairs)]


def fake_result(aa_first_arm_factor: float) -> dict:
    """What benchmark() returns, made up: 12 A/A and 12 slocap pairs."""
    rng = np.random.default_rng(5)
    runs, pos = [], 0
    for experiment, factor in (("A/A", aa_first_arm_factor), ("slocap", 1.04)):
        for i in range(12):
            base = 20.0 * (1 + rng.normal(0, 0.003))
            for arm, cpu in (("with", base * factor), ("without", base)):
                pos += 1
                runs.append(fake_run(experiment, i, arm, pos, cpu, 800.0 * (1.01 if arm == "with" else 1.0)))
    summaries, latency = {}, {}
    for experiment in ("slocap", "A/A"):
        summaries[experiment], _ = _summaries(runs, experiment, [PRIMARY, "machine_cpu_s", "wall_s"], 500, 42)
        latency[experiment], _ = _summaries(runs, experiment, ["ttft_p95_ms", "e2e_p95_ms"], 500, 42)
    args = argparse.Namespace(resamples=500, seed=42, workload="lab", seconds=30.0, signals=overhead.ALL_SIGNALS)
    return {"args": args, "runs": runs, "summaries": summaries, "latency": latency, "primary": PRIMARY,
            "validity": control_validity(summaries["A/A"][PRIMARY]),
            "net": net_of_control([r["with"] / r["without"] for r in _cpu_pairs(runs, "slocap")],
                                  [r["with"] / r["without"] for r in _cpu_pairs(runs, "A/A")], resamples=500),
            "direct": direct_figures(generated_windows(30, seed=4), 2) | {"workload_cpu_per_s": 0.5,
                                                                          "bpf_stats_runs": [True] * 12},
            "hooks": hook_costs(records()), "ncpu": 2, "pairs": {"slocap": 12, "A/A": 12},
            "peer_note": "peer skipped (--no-peer)", "bpftrace_note": "made up", "stats_note": "made up",
            "elapsed_s": 60.0, "load": ((0.5, 0.5, 0.5), (0.6, 0.6, 0.6))}


def test_render_of_a_biased_control_says_not_valid_and_gives_no_gate():
    res = fake_result(aa_first_arm_factor=1.03)
    assert not res["validity"].valid
    text = render(res)
    assert text.splitlines()[0].startswith("NOT VALID: control biased: A/A median +3.")
    assert text.splitlines()[-1].startswith("NOT VALID: control biased")
    assert ("gates on the workload+tool CPU / load gen. ratio (CI95 must lie below): no verdict: the run is NOT VALID"
            in text)


def test_render_of_a_good_control_gives_the_gate_and_the_tables():
    res = fake_result(aa_first_arm_factor=1.0)
    assert res["validity"].valid
    text = render(res)
    assert "NOT VALID" not in text
    assert "validity (workload+tool CPU / load gen., A/A median within ±0.5 % and CI95 holding 0): valid" in text
    # 60,000 switches x 750 ns = 45 ms of the load generator's 4 s
    assert "load generator's own share of the scheduler hooks cancels out of the primary figure: about 1.12 %" in text
    assert "GA <= 3 %: fail" in text  # the made-up slocap arm is 4 % above
    assert "sched_switch (runqueue)" in text and "sched_switch (cpu_steal, ours only)" in text
    assert "ours, runqueue 650 ns; ours, runqueue + cpu_steal 750 ns; runqlat 800 ns; bpftrace 900 ns" in text
    assert "TTFT p95" in text and "+1.00 [" in text


def test_net_of_control_subtracts_the_control_median():
    net = net_of_control([1.030, 1.031, 1.029, 1.032, 1.030], [1.001, 0.999, 1.000, 1.002, 0.998], resamples=500)
    assert net.median_pct == pytest.approx(3.0, abs=0.01)
    assert net.low_pct <= net.median_pct <= net.high_pct
    assert net_of_control([1.03], [1.0, 1.0]) is None  # one pair: no interval


def test_acceptance_lines_judge_each_target():
    res = fake_result(aa_first_arm_factor=1.0)
    checks = {c.text.partition(":")[0]: c for c in acceptance(res)}
    assert checks["A/A control"].ok
    assert not checks["slocap - A/A, workload+tool CPU / load gen."].ok  # the made-up slocap arm is 4 % above
    assert checks["TTFT p95 with / without slocap"].ok  # +1 %, inside +-2 %
    assert checks["scheduler hooks per context switch, runqueue + cpu_steal against runqlat"].ok  # 750 <= 800
    text = render(res)
    assert "  FAIL  slocap - A/A, workload+tool CPU / load gen.: +4." in text and "  ok    TTFT p95" in text
    biased = fake_result(aa_first_arm_factor=1.03)
    assert not any(c.ok for c in acceptance(biased)[:2])  # no overhead verdict from a biased run


# -- kernel.bpf_stats_enabled is put back as it was ---------------------------------


def test_bpf_stats_switched_on_and_restored(tmp_path, monkeypatch):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    monkeypatch.setattr(overhead, "BPF_STATS_SYSCTL", sysctl)
    stats = BpfStats()
    assert stats.enable() == "kernel.bpf_stats_enabled set to 1 for the benchmark (was 0), restored at the end"
    assert sysctl.read_text() == "1\n" and BpfStats.on()
    stats.restore()
    assert sysctl.read_text() == "0\n"
    stats.restore()  # twice: nothing more
    assert sysctl.read_text() == "0\n"


def test_bpf_stats_already_on_are_left_alone(tmp_path, monkeypatch):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("1\n")
    monkeypatch.setattr(overhead, "BPF_STATS_SYSCTL", sysctl)
    stats = BpfStats()
    assert stats.enable() == "kernel.bpf_stats_enabled was 1 already: left as it was"
    stats.restore()
    assert sysctl.read_text() == "1\n"


# -- the span sink stands in for the recorder's OTLP receiver -----------------------

def test_span_sink_takes_spans_only_while_resumed():
    import http.client
    import socket

    from bench.overhead import SpanSink

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SpanSink(("127.0.0.1", port))

    def post() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", "/v1/traces", body=b"\x0a\x00", headers={"Content-Type": "application/x-protobuf"})
            return conn.getresponse().status
        finally:
            conn.close()

    sink.resume()
    try:
        assert post() == 200
        sink.pause()
        with pytest.raises(ConnectionRefusedError):  # the recorder binds the address now
            post()
        sink.resume()
        assert post() == 200
    finally:
        sink.pause()
