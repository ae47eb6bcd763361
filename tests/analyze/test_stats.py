"""analyze.stats on GENERATED samples with known distributions (no lab data here).

Every sample below is drawn from a seeded numpy generator: a "run" is 800 requests
whose TTFT is log-normal (median 600 ms, sigma 0.5), and its value is their p95, as
`sloan compare` computes it per run. The repetition counts are chosen so that the
tests take seconds and the asserted rates sit far from the measured ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm

from analyze.stats import (
    Difference,
    bootstrap_median_ci,
    bootstrap_median_diff,
    cliffs_delta,
    compare_samples,
    is_regression,
    magnitude,
    mann_whitney_p,
)

REQUESTS_PER_RUN = 800


def generated_run_p95(rng: np.random.Generator, runs: int, scale: float = 1.0) -> list[float]:
    """GENERATED: the TTFT p95 of each of `runs` runs of log-normal requests."""
    ttft = rng.lognormal(np.log(600 * scale), 0.5, size=(runs, REQUESTS_PER_RUN))
    return list(np.quantile(ttft, 0.95, axis=1))


# --- Cliff's delta ----------------------------------------------------------------------


def test_cliffs_delta_on_hand_counted_pairs():
    assert cliffs_delta([3, 4], [1, 2]) == 1.0
    assert cliffs_delta([1, 2], [3, 4]) == -1.0
    assert cliffs_delta([1, 2, 3], [2]) == 0.0  # one above, one tie, one below
    assert cliffs_delta([1, 2, 3, 4], [2.5]) == 0.0
    assert cliffs_delta([2, 3, 4], [1, 3]) == 0.5  # 2>1 2<3 3>1 3=3 4>1 4>3: (4 - 1) / 6
    assert cliffs_delta([], [1]) is None


def test_cliffs_delta_is_the_pairwise_definition_antisymmetric_and_bounded():
    rng = np.random.default_rng(1)  # GENERATED, small integers so that ties occur
    for _ in range(20):
        x, y = rng.integers(0, 6, size=7), rng.integers(0, 6, size=11)
        d = cliffs_delta(x, y)
        assert d == pytest.approx(np.sign(x[:, None] - y[None, :]).mean())
        assert -1 <= d <= 1
        assert cliffs_delta(y, x) == pytest.approx(-d)


@pytest.mark.parametrize("shift", [0.0, 0.2, 0.5, 1.0])
def test_cliffs_delta_matches_its_known_value_for_shifted_normals(shift):
    # GENERATED: X ~ N(shift, 1), Y ~ N(0, 1) => P(X > Y) - P(X < Y) = 2 Phi(shift / sqrt 2) - 1
    rng = np.random.default_rng(7)
    x, y = rng.normal(shift, 1, 3000), rng.normal(0, 1, 3000)
    assert cliffs_delta(x, y) == pytest.approx(2 * norm.cdf(shift / np.sqrt(2)) - 1, abs=0.03)


@pytest.mark.parametrize("delta, name", [
    (0.0, "negligible"), (0.146, "negligible"), (-0.146, "negligible"), (0.147, "small"),
    (-0.2, "small"), (0.33, "medium"), (0.473, "medium"), (0.474, "large"), (-1.0, "large"), (None, None)])
def test_magnitude_thresholds(delta, name):
    assert magnitude(delta) == name


# --- Mann-Whitney U ---------------------------------------------------------------------


def test_mann_whitney_is_scipys_two_sided_test_and_handles_degenerate_samples():
    x, y = [1.0, 2.5, 3.1, 4.7], [0.5, 0.9, 1.2]
    assert mann_whitney_p(x, y) == pytest.approx(mannwhitneyu(x, y, alternative="two-sided").pvalue)
    assert mann_whitney_p([5.0] * 4, [5.0] * 3) == 1.0  # all equal: no evidence, no division by zero
    assert mann_whitney_p([], [1.0]) is None


# --- bootstrap CI -----------------------------------------------------------------------


def test_bootstrap_is_seeded_and_holds_the_point_difference():
    rng = np.random.default_rng(3)  # GENERATED
    c, b = rng.normal(110, 10, 12), rng.normal(100, 10, 12)
    ci = bootstrap_median_diff(c, b, seed=5)
    assert ci == bootstrap_median_diff(c, b, seed=5)
    assert ci != bootstrap_median_diff(c, b, seed=6)
    assert ci[0] <= np.median(c) - np.median(b) <= ci[1]
    assert bootstrap_median_diff([1.0], [1.0, 2.0]) is None  # one run says nothing about spread


def test_bootstrap_ci_narrows_as_runs_grow():
    rng = np.random.default_rng(4)  # GENERATED
    widths = []
    for n in (10, 40, 160):
        lo, hi = bootstrap_median_diff(rng.normal(0, 1, n), rng.normal(0, 1, n), resamples=4000)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_ci_covers_the_true_difference_about_95_percent_of_the_time():
    # GENERATED: normal runs, true difference of medians = 5; 300 seeded repetitions, n = 30 per tag.
    covered = 0
    for rep in range(300):
        rng = np.random.default_rng(10_000 + rep)
        lo, hi = bootstrap_median_diff(rng.normal(105, 10, 30), rng.normal(100, 10, 30), resamples=2000, seed=rep)
        covered += lo <= 5 <= hi
    assert 0.90 <= covered / 300 <= 0.99


def test_resampling_within_scenarios_keeps_the_class_balance():
    # GENERATED: half the runs of each tag are a fault scenario 10x slower. Resampling runs
    # freely changes the fault share of each resample, and with it the median; inside
    # strata every resample keeps 5 + 5, so the interval only reflects run-to-run noise.
    rng = np.random.default_rng(5)
    strata = ["baseline"] * 5 + ["fault"] * 5
    level = np.array([100.0] * 5 + [1000.0] * 5)
    c, b = level + rng.normal(0, 5, 10), level + rng.normal(0, 5, 10)
    free = bootstrap_median_diff(c, b)
    within = bootstrap_median_diff(c, b, candidate_strata=strata, base_strata=strata)
    assert within[1] - within[0] < (free[1] - free[0]) / 5


# --- the gate's rule: power and false alarms at n = 10 per tag ---------------------------


def test_a_10_percent_shift_in_p95_is_detected_at_10_runs_per_tag():
    # GENERATED: candidate TTFT x 1.10 (so its p95 is 10 % higher); base and candidate
    # 10 runs each; 100 seeded repetitions. Measured over 500: the gate's rule fires in 99.6 %.
    detected = significant = 0
    reps = 100
    for rep in range(reps):
        rng = np.random.default_rng(20_000 + rep)
        base, cand = generated_run_p95(rng, 10), generated_run_p95(rng, 10, scale=1.10)
        d = compare_samples(cand, base, resamples=2000, seed=rep)
        assert d.pct == pytest.approx(10, abs=6)
        detected += is_regression(d, max_pct=5)
        significant += d.p_value < 0.05
    assert detected / reps >= 0.90
    assert significant / reps >= 0.90


def test_an_a_a_comparison_raises_no_alarm_in_at_least_95_percent_of_repetitions():
    # GENERATED: both tags from the same distribution, 10 runs each, 200 seeded repetitions.
    # Measured over 1000: the gate's rule fires in 0.2 %, MWU p < 0.05 in 4.1 % (nominal 5 %).
    alarms = significant = 0
    reps = 200
    for rep in range(reps):
        rng = np.random.default_rng(30_000 + rep)
        d = compare_samples(generated_run_p95(rng, 10), generated_run_p95(rng, 10), resamples=2000, seed=rep)
        alarms += is_regression(d, max_pct=5)
        significant += d.p_value < 0.05
    assert (reps - alarms) / reps >= 0.95
    assert significant / reps <= 0.08


# --- the rule itself --------------------------------------------------------------------


def _diff(pct, ci_low, ci_high, delta):
    return Difference(n_base=10, n_candidate=10, base=100.0, candidate=100 + pct, diff=pct, pct=pct,
                      ci_low=ci_low, ci_high=ci_high, p_value=0.01, cliffs_delta=delta, magnitude=magnitude(delta))


@pytest.mark.parametrize("d, regressed", [
    (_diff(12, 4, 20, 0.6), True),
    (_diff(4, 1, 8, 0.6), False),  # within the allowed 5 %
    (_diff(12, -1, 20, 0.6), False),  # CI95 reaches 0
    (_diff(12, 4, 20, 0.1), False),  # negligible effect
    (_diff(-12, -20, -4, -0.6), False),  # faster is no regression
])
def test_is_regression_needs_size_ci_and_effect(d, regressed):
    assert is_regression(d, 5) is regressed


def test_is_regression_when_lower_is_worse():
    # tokens/s: 12 % lower is a regression, 12 % higher is not
    assert is_regression(_diff(-12, -20, -4, -0.6), 5, higher_is_worse=False)
    assert not is_regression(_diff(12, 4, 20, 0.6), 5, higher_is_worse=False)


# --- the median bootstrap of reports and the overhead benchmark (generated samples) ---


def test_bootstrap_is_deterministic_for_a_seed():
    x = np.random.default_rng(4).normal(1.0, 0.05, 20)  # generated
    first = bootstrap_median_ci(x, seed=42)
    np.random.seed(7)  # the global generator plays no part
    np.random.random(100)
    assert bootstrap_median_ci(x, seed=42) == first
    # another seed moves the CI of a median little or not at all (it sits on order statistics)
    other = bootstrap_median_ci(x, seed=43)
    assert other[0] == first[0] and abs(other[1] - first[1]) < 0.02 and abs(other[2] - first[2]) < 0.02


def test_bootstrap_median_is_the_sample_median_and_inside_its_ci():
    x = np.random.default_rng(5).lognormal(0, 0.05, 21)  # generated
    median, low, high = bootstrap_median_ci(x, resamples=10_000, seed=42)
    assert median == float(np.median(x))
    assert low <= median <= high


def test_bootstrap_of_one_value_has_no_ci():
    median, low, high = bootstrap_median_ci([1.03])
    assert median == 1.03 and low is None and high is None
    with pytest.raises(ValueError):
        bootstrap_median_ci([])


def test_bootstrap_median_ci_strata_must_match_the_values():
    with pytest.raises(ValueError, match="3 values but 2 strata"):
        bootstrap_median_ci([1.0, 2.0, 3.0], strata=["a", "b"])
