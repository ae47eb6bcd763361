"""Scoring math on HAND-MADE windows and runs (typed in here), the split, the bootstrap,
the exploratory flag and the gate; then the whole pipeline on hand-made run directories;
and one test over the committed real lab runs in datasets/labeled/ when they exist."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyze.attribution import DOMAINS, UNKNOWN
from analyze.scoring import (
    NONE,
    CorrelationCounts,
    RunScore,
    ScoredWindow,
    class_balance,
    confusion,
    correlation_counts,
    exploratory_reasons,
    metrics_from_counts,
    prf,
    run_counts,
    score_runs,
    split_runs,
    summarize,
    window_truth,
)
from analyze.slo import RunInfo
from analyze.stats import resample_indices
from runfmt.config import load_config
from tests.support.lab_run import make_run

S = 1_000_000_000
DATASET = Path(__file__).resolve().parents[2] / "datasets" / "labeled"


def _w(i: int, truth: set[str], blamed: set[str], predicted: str | None = None) -> ScoredWindow:
    if predicted is None:
        predicted = sorted(blamed)[0] if blamed else UNKNOWN
    return ScoredWindow(i, i * S, (i + 1) * S, frozenset(truth), predicted, frozenset(blamed))


def _run(run_id: str, scenario: str, labels: list[str], windows: list[ScoredWindow]) -> RunScore:
    return RunScore(run_id, scenario, [{"domain": d, "start_ns": 2 * S, "end_ns": 8 * S} for d in labels], windows)


# hand-made: 2 dns runs, 1 cpu run, 1 baseline run
DNS_A = _run("a", "dns_latency", ["network_dns"], [
    _w(1, set(), set()),  # before the fault, abstained: fine
    _w(3, {"network_dns"}, {"network_dns"}),  # TP dns, detected at the end of window 3 = 4 s
    _w(4, {"network_dns"}, {"network_dns"}),  # TP
    _w(5, {"network_dns"}, set()),  # FN dns, abstained on a fault window
])
DNS_B = _run("b", "dns_latency", ["network_dns"], [
    _w(3, {"network_dns"}, {"cpu_throttle"}),  # FN dns, FP cpu
    _w(6, {"network_dns"}, {"network_dns"}),  # TP, detected at 7 s: delay 5 s
])
CPU = _run("c", "cpu_contention", ["cpu_throttle"], [
    _w(2, {"cpu_throttle"}, {"cpu_throttle", "network_dns"}, "cpu_throttle"),  # TP cpu, FP dns; delay 1 s
])
BASE = _run("d", "baseline", [], [
    _w(1, set(), {"network_dns"}),  # FP dns on a no-fault window
    _w(2, set(), set()),
])
RUNS = [DNS_A, DNS_B, CPU, BASE]


def test_window_truth_is_the_labels_overlapping_the_window():
    labels = [{"domain": "network_dns", "start_ns": 10, "end_ns": 20}]
    assert window_truth(labels, 0, 11) == {"network_dns"}
    assert window_truth(labels, 19, 30) == {"network_dns"}
    assert window_truth(labels, 20, 30) == frozenset()  # touching is not overlapping
    assert window_truth(labels, 0, 10) == frozenset()


def test_precision_recall_f1_per_domain_and_macro():
    assert prf(3, 1, 2) == pytest.approx((0.75, 0.6, 2 * 0.75 * 0.6 / 1.35))
    assert prf(0, 0, 0) == (None, None, None)
    assert prf(0, 2, 0) == (0.0, None, 0.0)
    m = metrics_from_counts(np.sum([run_counts(r) for r in RUNS], axis=0))
    dns, cpu = m["per_domain"]["network_dns"], m["per_domain"]["cpu_throttle"]
    # dns: TP a3 a4 b6 = 3; FP c2 d1 = 2; FN a5 b3 = 2
    assert (dns["tp"], dns["fp"], dns["fn"]) == (3, 2, 2)
    assert dns["precision"] == pytest.approx(0.6) and dns["recall"] == pytest.approx(0.6)
    # cpu: TP c2 = 1; FP b3 = 1; FN 0
    assert (cpu["tp"], cpu["fp"], cpu["fn"]) == (1, 1, 0)
    assert cpu["precision"] == 0.5 and cpu["recall"] == 1.0 and cpu["f1"] == pytest.approx(2 / 3)
    assert m["in_play"] == ["network_dns", "cpu_throttle"]
    assert m["precision"] == pytest.approx((0.6 + 0.5) / 2)
    assert m["recall"] == pytest.approx((0.6 + 1.0) / 2)
    assert m["f1"] == pytest.approx((0.6 + 2 / 3) / 2)  # mean of per-domain F1
    assert m["per_domain"]["memory_pressure"]["precision"] is None


def test_abstain_rates_and_confusion():
    m = metrics_from_counts(np.sum([run_counts(r) for r in RUNS], axis=0))
    # 9 windows; abstained a1 a5 d2 = 3; fault windows 6 (a3 a4 a5 b3 b6 c2), abstained a5
    assert m["windows"] == 9 and m["abstain_rate"] == pytest.approx(3 / 9)
    assert m["abstain_rate_fault"] == pytest.approx(1 / 6)
    assert m["abstain_rate_none"] == pytest.approx(2 / 3)
    assert m["abstain_rate_quiet"] is None  # these hand-made runs have no quiet-window counts
    quiet = _run("q", "baseline", [], [])
    quiet.quiet_windows, quiet.quiet_abstained = 12, 11  # windows that did not page count here too
    m = metrics_from_counts(np.sum([run_counts(r) for r in [*RUNS, quiet]], axis=0))
    assert m["abstain_rate_quiet"] == pytest.approx(11 / 12)
    assert m["abstain_rate_none"] == pytest.approx(2 / 3)  # paging windows only, unchanged
    assert confusion(RUNS) == {
        "cpu_throttle": {"cpu_throttle": 1},
        "network_dns": {"cpu_throttle": 1, "network_dns": 3, UNKNOWN: 1},
        NONE: {"network_dns": 1, UNKNOWN: 2},
    }


def test_detection_delay_is_fault_start_to_the_first_correct_window():
    assert DNS_A.delay_s == pytest.approx(2.0)  # window 3 ends at 4 s, fault from 2 s
    assert DNS_B.delay_s == pytest.approx(5.0)
    assert CPU.delay_s == pytest.approx(1.0)
    assert BASE.delay_s is None and BASE.classes == {NONE}
    s = summarize(RUNS, resamples=200, seed=1)
    assert s["detection_delay_s"].value == pytest.approx(2.0)  # median of 2, 5, 1
    assert (s["detected"], s["faulted"]) == (3, 3)


def test_bootstrap_is_seeded_and_stays_inside_each_scenario():
    idx = resample_indices(["x", "y", "x", "y", "z"], 50, seed=3)
    assert idx.shape == (50, 5)
    strata = np.array(["x", "y", "x", "y", "z"])
    for row in idx:  # every resample keeps 2 x, 2 y, 1 z
        assert sorted(strata[row]) == ["x", "x", "y", "y", "z"]
    assert (resample_indices(["x", "y", "x"], 20, 9) == resample_indices(["x", "y", "x"], 20, 9)).all()
    one = summarize(RUNS, resamples=300, seed=42)
    two = summarize(RUNS, resamples=300, seed=42)
    assert one["precision"] == two["precision"] and one["recall"].ci95 == two["recall"].ci95
    assert one["precision"].ci95 is not None
    lo, hi = one["precision"].ci95
    assert lo <= one["precision"].value <= hi
    other = summarize(RUNS, resamples=300, seed=43)
    assert other["precision"].value == one["precision"].value


def test_no_ci_when_nothing_can_vary():
    s = summarize([DNS_A, CPU], resamples=100)  # one run per scenario
    assert s["precision"].value is not None and s["precision"].ci95 is None


def test_exploratory_below_ten_runs_per_class_and_the_gate():
    balance, windows = class_balance(RUNS)
    assert balance == {"cpu_throttle": 1, "network_dns": 2, NONE: 1}
    assert windows == {"cpu_throttle": 1, "network_dns": 5, NONE: 3}
    reasons = exploratory_reasons(balance, 4)
    assert reasons == ["class cpu_throttle has 1 test run(s) < 10", "class network_dns has 2 test run(s) < 10",
                       "class none has 1 test run(s) < 10"]
    assert exploratory_reasons({"network_dns": 10, NONE: 12}, 22) == []


def _perfect_runs(n_per_class: int) -> list[RunScore]:
    runs = []
    for i in range(n_per_class):
        runs.append(_run(f"dns{i}", "dns_latency", ["network_dns"], [_w(3, {"network_dns"}, {"network_dns"})]))
        runs.append(_run(f"base{i}", "baseline", [], [_w(1, set(), set())]))
    return runs


def _result(runs: list[RunScore]):
    """A ScoreResult from hand-made runs, as score_runs assembles it."""
    from analyze.scoring import ScoreResult

    s = summarize(runs, resamples=100)
    balance, per_windows = class_balance(runs)
    reasons = exploratory_reasons(balance, len(runs))
    return ScoreResult(
        test_runs=[r.run_id for r in runs], train_runs=[], split={}, runs=[], class_balance=balance,
        windows_per_class=per_windows, per_domain=s["per_domain"], precision=s["precision"],
        recall=s["recall"], f1=s["f1"], abstain_rate=s["abstain_rate"],
        abstain_rate_fault=s["abstain_rate_fault"], abstain_rate_none=s["abstain_rate_none"],
        abstain_rate_quiet=s["abstain_rate_quiet"], detection_delay_s=s["detection_delay_s"], detected=s["detected"], faulted=s["faulted"],
        confusion=s["confusion"], unpaged_fault_windows=0, windows=s["windows"], correlation={},
        exploratory=bool(reasons), exploratory_reasons=reasons, not_evaluated=[], model={})


def test_an_exploratory_result_never_passes_the_gate():
    cfg = load_config()
    small = _result(_perfect_runs(9))
    assert small.precision.value == 1.0 and small.recall.value == 1.0
    passed, reasons = small.gate(cfg)
    assert not passed
    assert reasons == ["exploratory: class network_dns has 9 test run(s) < 10; class none has 9 test run(s) "
                       "< 10 (an exploratory result never passes the gate)"]
    big = _result(_perfect_runs(10))
    assert big.gate(cfg) == (True, [])
    poor = _result(_perfect_runs(10) + [_run("x", "dns_latency", ["network_dns"],
                                             [_w(3, {"network_dns"}, set()), _w(4, {"network_dns"}, set())])])
    passed, reasons = poor.gate(cfg)
    assert not passed and reasons == [f"macro recall {poor.recall.value:.3f} < gate.min_recall 0.85"]


def _info(run_id: str, scenario: str) -> RunInfo:
    return RunInfo(Path(run_id), run_id, "main", scenario, "n", "smoke", "core_full", {}, {}, True)


def test_split_is_by_run_stratified_seeded_and_disjoint():
    infos = [_info(f"{s}-{i}", s) for s in ("dns", "cpu", "base") for i in range(3)] + [_info("lone", "tls")]
    train, test = split_runs(infos, seed=42, train_fraction=0.5)
    assert (train, test) == split_runs(infos, seed=42, train_fraction=0.5)
    assert not set(train) & set(test) and len(train) + len(test) == 10
    for s in ("dns", "cpu", "base"):  # floor(3 * 0.5) = 1 trains, 2 test
        assert sum(r.startswith(s) for r in train) == 1
    assert "lone" in test  # a lone run always tests
    assert split_runs(infos, seed=42, train_fraction=0.0) == ([], sorted(i.run_id for i in infos))
    with pytest.raises(ValueError):
        split_runs(infos, train_fraction=1.0)


def test_correlation_counts_on_hand_made_truth_rows():
    rows = [
        {"trace_id": "t1", "span_id": "s1", "event_no": 1, "matched_trace_id": "t1", "matched_span_id": "s1",
         "tier": "trace_id"},  # right span, expected tier
        {"trace_id": "t2", "span_id": "s2", "event_no": 2, "matched_trace_id": "t2", "matched_span_id": "s2",
         "tier": "pod_pid"},  # right span, other tier
        {"trace_id": "t3", "span_id": "s3", "event_no": 3, "matched_trace_id": "t9", "matched_span_id": "s9",
         "tier": "pod_pid"},  # wrong span
        {"trace_id": "t4", "span_id": "s4", "event_no": 4, "matched_trace_id": None, "matched_span_id": None,
         "tier": None},  # not paired
        {"trace_id": "t5", "span_id": "s5", "event_no": None, "matched_trace_id": None, "matched_span_id": None,
         "tier": None},  # no kernel event at all
    ]
    c = correlation_counts(rows, "trace_id")
    assert (c.truth, c.no_event, c.matched, c.right_span, c.right_span_expected_tier) == (5, 1, 3, 2, 1)
    assert c.precision == pytest.approx(2 / 3) and c.recall == pytest.approx(1 / 5)
    assert c.tiers == {"trace_id": 1, "pod_pid": 1} and c.wrong_tiers == {"pod_pid": 1}
    total = CorrelationCounts()
    total.add(c)
    total.add(c)
    assert total.truth == 10 and total.wrong_tiers == {"pod_pid": 2}


def test_score_runs_on_hand_made_run_directories(tmp_path):
    for i in range(3):
        make_run(tmp_path, f"dns-{i}", seed=i)
    make_run(tmp_path, "base-0", scenario="baseline", fault=None, seed=10)
    make_run(tmp_path, "base-1", scenario="baseline", fault=None, seed=11)
    (tmp_path / "unlabelled").mkdir()
    make_run(tmp_path / "unlabelled", "x-0", labels=False)
    result = score_runs([tmp_path], load_config(), resamples=200)
    # floor(3 * 0.5) = 1 dns run and floor(2 * 0.5) = 1 baseline run train
    assert len(result.train_runs) == 2 and result.n_runs == 3
    assert result.notes == [f"{tmp_path / 'unlabelled' / 'tag=main' / 'scenario=dns_latency' / 'run=x-0'}: "
                            "no labels.parquet, left out"]
    assert result.exploratory and result.class_balance == {"network_dns": 2, NONE: 1}
    dns = result.per_domain["network_dns"]
    assert dns["precision"].value == 1.0 and dns["fp"] == 0
    assert result.detected == result.faulted == 2
    assert result.correlation["dns"]["recall"]["value"] == 1.0
    assert result.correlation["dns"]["truth_pairs"] == 3 * 120  # every lookup of every fault phase
    assert result.model["trained"]["runs"] == result.train_runs
    assert result.split["train"] == result.train_runs and result.split["seed"] == 42
    roles = {r["run_id"]: r["role"] for r in result.runs}
    assert sorted(k for k, v in roles.items() if v == "train") == result.train_runs
    again = score_runs([tmp_path], load_config(), resamples=200)
    assert again.to_dict()["precision"] == result.to_dict()["precision"]


def test_score_cli_gate_fails_when_exploratory_and_report_is_written(tmp_path, sloan):
    make_run(tmp_path / "runs", "dns-0", seed=0)
    make_run(tmp_path / "runs", "dns-1", seed=1)
    r = sloan("score", "--runs", str(tmp_path / "runs"), "--json", "--resamples", "100",
             "--save-model", str(tmp_path / "model.json"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["exploratory"] is True and doc["gate"]["passed"] is False
    assert json.loads((tmp_path / "model.json").read_text())["trained"]["runs"] == doc["train_runs"]
    r = sloan("score", "--runs", str(tmp_path / "runs"), "--gate", "--resamples", "100")
    assert r.exit_code == 1
    assert "error: attribution gate failed: exploratory: class network_dns has 1 test run(s) < 10" in r.output
    r = sloan("report", "--runs", str(tmp_path / "runs"), "-o", str(tmp_path / "report.md"))
    assert r.exit_code == 0, r.output
    text = (tmp_path / "report.md").read_text()
    for heading in ("## Runs", "## SLO summary", "## Attribution scores", "### Confusion matrix",
                    "### Split", "## Correlation scores"):
        assert heading in text
    assert "**EXPLORATORY**" in text and "core_full" in text and "macro precision" in text


def test_real_lab_runs_in_the_committed_dataset():
    """Attribution + scoring over datasets/labeled/ (real kernel data of really injected
    faults). Checks invariants, not figures: the figures are the report's job."""
    if not DATASET.is_dir() or not any(DATASET.rglob("labels.parquet")):
        pytest.skip(f"no labelled runs committed at {DATASET} (make dataset writes them)")
    result = score_runs([DATASET], load_config(), resamples=200)
    assert result.n_runs >= 1
    assert not set(result.train_runs) & set(result.test_runs)
    assert set(result.model["trained"]["runs"]) == set(result.train_runs)
    for m in (result.precision, result.recall, result.f1, result.abstain_rate):
        assert m.value is None or 0.0 <= m.value <= 1.0
    for d in DOMAINS:
        pd = result.per_domain[d]
        assert pd["support"] == pd["tp"] + pd["fn"]
    assert result.exploratory == any(n < 10 for n in result.class_balance.values())
    if result.exploratory:
        assert not result.gate(load_config())[0]
    for check in result.correlation.values():
        assert check["right_span"] <= check["matched"] <= check["truth_pairs"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sets(st.sampled_from(DOMAINS[:3])), st.sets(st.sampled_from(DOMAINS[:3]))),
                min_size=1, max_size=30))
def test_counts_give_scikit_learns_precision_recall_and_f1(pairs):
    # the bootstrap sums per-run counts; their metrics must be scikit-learn's on the windows
    from sklearn.metrics import precision_recall_fscore_support

    from analyze.scoring import indicators

    windows = [_w(i, truth, blamed) for i, (truth, blamed) in enumerate(pairs)]
    m = metrics_from_counts(run_counts(_run("r", "s", [], windows)))
    p, r, f, _ = precision_recall_fscore_support(indicators([w.truth for w in windows]),
                                                 indicators([w.blamed for w in windows]),
                                                 average=None, zero_division=0)
    for i, d in enumerate(DOMAINS):
        pd = m["per_domain"][d]
        assert (pd["precision"] or 0.0) == pytest.approx(p[i])
        assert (pd["recall"] or 0.0) == pytest.approx(r[i])
        assert (pd["f1"] or 0.0) == pytest.approx(f[i])


def test_the_model_is_scored_beside_a_scikit_learn_baseline(tmp_path):
    for i in range(3):
        make_run(tmp_path, f"dns-{i}", seed=i)
    make_run(tmp_path, "base-0", scenario="baseline", fault=None, seed=10)
    make_run(tmp_path, "base-1", scenario="baseline", fault=None, seed=11)
    doc = score_runs([tmp_path], load_config(), resamples=50).to_dict()
    base = doc["baseline"]
    assert base["model"].startswith("scikit-learn LogisticRegression")
    assert base["trained_on"] == "the same training runs"
    for key in ("precision", "recall", "f1"):
        assert base[key]["value"] is None or 0.0 <= base[key]["value"] <= 1.0
    assert set(base["recall_by_domain"]) <= set(DOMAINS)


def test_recall_per_intensity_and_leave_one_intensity_out(tmp_path):
    for i, ms in enumerate((120.0, 120.0, 400.0, 400.0, 900.0, 900.0)):
        make_run(tmp_path, f"dns-{i}", seed=i, dns_fault_ms=ms)
    make_run(tmp_path, "base-0", scenario="baseline", fault=None, seed=10)
    make_run(tmp_path, "base-1", scenario="baseline", fault=None, seed=11)
    result = score_runs([tmp_path], load_config(), resamples=50, split_by="intensity")
    assert result.train_runs == [] and result.n_runs == 8  # every run is tested, by a model blind to it
    assert result.split["method"].startswith("leave one intensity out")
    keys = [row["intensity"] for row in result.by_intensity]
    assert keys == ["dns_latency ms=120", "dns_latency ms=400", "dns_latency ms=900"]
    for row in result.by_intensity:
        assert row["runs"] == 2
        assert row["recall"] is None or 0.0 <= row["recall"] <= 1.0
        assert row["hits"] + row["misses"] <= row["paged_fault_windows"]
    assert result.mixed["runs"] == 0 and result.mixed["recall"] is None
    default = score_runs([tmp_path], load_config(), resamples=50)
    assert sum(row["runs"] for row in default.by_intensity) == len([r for r in default.test_runs
                                                                  if r.startswith("dns")])
    with pytest.raises(ValueError):
        score_runs([tmp_path], load_config(), resamples=50, split_by="intensity", model=default.fitted_model())


def test_intensity_key_names_each_part_of_a_mixed_fault():
    from analyze.scoring import intensity_key

    labels = [{"domain": "network_dns", "intensity": '{"ms": 300}'},
              {"domain": "cpu_throttle", "intensity": '{"hogs": 2, "cpus": 1.0}'}]
    assert intensity_key("dns_latency+cpu_contention", labels) == "dns_latency+cpu_contention ms=300 cpus=1,hogs=2"
    assert intensity_key("baseline", []) == "baseline"
    assert intensity_key("x", [{"domain": "d", "intensity": "not json"}]) == "x intensity=not json"
