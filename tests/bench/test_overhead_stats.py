"""The overhead benchmark's statistics (bench/overhead.py), on GENERATED samples:
every sample here is drawn from a seeded random generator, none is measured."""

from __future__ import annotations

import numpy as np
import pytest

from bench.overhead import (
    Summary,
    gate_verdict,
    paired_ratios,
    schedule,
    summarize,
)


def generated_pairs(n: int, shift: float, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated, not measured: a baseline CPU time per pair that drifts between
    pairs (so pairing matters), and a 'with' arm = baseline * (1 + shift),
    each arm with its own multiplicative noise of sd `noise`."""
    rng = np.random.default_rng(seed)
    base = 5.0 * (1 + rng.normal(0, 0.10, n))  # 10 % drift pair to pair
    without = base * (1 + rng.normal(0, noise, n))
    with_ = base * (1 + shift) * (1 + rng.normal(0, noise, n))
    return with_, without


def test_paired_ratios_divide_pair_by_pair():
    assert paired_ratios([2.0, 3.0, 1.0], [1.0, 2.0, 4.0]).tolist() == [2.0, 1.5, 0.25]


@pytest.mark.parametrize("with_, without", [
    ([1.0, 2.0], [1.0]),            # unequal lengths
    ([1.0], [0.0]),                 # division by zero
    ([float("nan")], [1.0]),        # not finite
    ([[1.0]], [[1.0]]),             # not 1-d
])
def test_paired_ratios_reject_bad_samples(with_, without):
    with pytest.raises(ValueError):
        paired_ratios(with_, without)


def test_known_5pct_shift_is_detected_at_20_pairs():
    # generated: +5 % in the 'with' arm, 2 % noise per arm (about 3 % per ratio)
    with_, without = generated_pairs(20, shift=0.05, noise=0.02, seed=1)
    s = summarize(with_, without, seed=42)
    assert s.n == 20
    assert 3.0 < s.median_pct < 7.0
    assert s.low_pct > 0, f"CI95 should exclude 0: {s}"
    assert s.low_pct < 5.0 < s.high_pct, f"CI95 should hold the true shift: {s}"


def test_aa_sample_ci_contains_zero():
    # generated: no shift, same noise; arms drawn alike
    with_, without = generated_pairs(20, shift=0.0, noise=0.02, seed=2)
    s = summarize(with_, without, seed=42)
    assert s.contains_zero, f"A/A CI95 should hold 0: {s}"
    assert abs(s.median_pct) < 2.5


def test_aa_coverage_is_near_95pct():
    # generated: 200 A/A samples of 20 pairs; the CI95 of the median should hold 0 in most.
    # the percentile bootstrap of a median at n=20 is a little narrow, hence the wide band
    held = 0
    for seed in range(200):
        with_, without = generated_pairs(20, shift=0.0, noise=0.02, seed=1000 + seed)
        held += summarize(with_, without, resamples=2000, seed=seed).contains_zero
    assert 0.85 <= held / 200 <= 0.995


def test_pairing_removes_drift_between_pairs():
    # generated: 10 % drift between pairs and a 5 % shift; the paired ratio sees the
    # shift with a CI far narrower than the drift
    with_, without = generated_pairs(20, shift=0.05, noise=0.01, seed=3)
    s = summarize(with_, without, seed=42)
    assert s.high_pct - s.low_pct < 3.0


def test_gate_verdict_reads_the_whole_ci():
    assert gate_verdict(Summary(20, 1.0, 0.2, 2.5), 3.0) == "pass"
    assert gate_verdict(Summary(20, 4.0, 3.5, 4.5), 3.0) == "fail"
    assert gate_verdict(Summary(20, 2.8, 1.0, 4.0), 3.0).startswith("undecided")
    assert gate_verdict(Summary(5, 1.0, 0.2, 2.5), 3.0).startswith("exploratory")


def test_schedule_runs_each_arm_of_each_pair_once_in_a_seeded_order():
    plan = schedule({"slocap": 20, "runqlat": 20, "A/A": 20}, seed=42)
    assert plan == schedule({"slocap": 20, "runqlat": 20, "A/A": 20}, seed=42)
    assert plan != schedule({"slocap": 20, "runqlat": 20, "A/A": 20}, seed=43)
    assert sorted((e, i) for e, i, _ in plan) == sorted((e, i) for e in ("slocap", "runqlat", "A/A")
                                                         for i in range(20))
    assert all(sorted(arms) == ["with", "without"] for _, _, arms in plan)
    for experiment in ("slocap", "runqlat", "A/A"):  # counterbalanced: half of each runs "with" first
        assert [arms[0] for e, _, arms in plan if e == experiment].count("with") == 10
    experiments = [e for e, _, _ in plan]
    assert experiments[:20] != ["slocap"] * 20  # experiments are interleaved, not in blocks


def test_schedule_splits_an_odd_count_of_pairs_one_apart():
    firsts = [arms[0] for _, _, arms in schedule({"slocap": 7}, seed=3)]
    assert sorted([firsts.count("with"), firsts.count("without")]) == [3, 4]


def test_order_strata_keep_an_order_effect_out_of_the_interval():
    """Pairs that read 1 point higher when "without" ran first: resampling inside each
    order gives a narrower CI95 than resampling the pairs freely, around the same median."""
    rng = np.random.default_rng(5)
    ratios = np.r_[1.02 + rng.normal(0, 0.002, 10), 1.03 + rng.normal(0, 0.002, 10)]
    firsts = ["with"] * 10 + ["without"] * 10
    free = summarize(ratios, np.ones(20), seed=1)
    kept = summarize(ratios, np.ones(20), firsts=firsts, seed=1)
    assert kept.median_pct == free.median_pct
    assert kept.high_pct - kept.low_pct < free.high_pct - free.low_pct
