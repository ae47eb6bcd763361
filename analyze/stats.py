"""Statistics of a release comparison, over runs: the difference of medians with a
seeded bootstrap CI95, a Mann-Whitney U p-value and Cliff's delta as effect size.

The unit of observation is a run (one value per run, e.g. its TTFT p95), never a
request: requests of one run share its host, load and faults, so they are not
independent draws of a release.

* Difference: median(candidate) - median(base), in the metric's unit, and relative
  to the base median in percent.
* CI95: percentile bootstrap of that difference, resampling runs with replacement
  inside each tag (and inside each stratum, e.g. scenario, when strata are given, so a
  resample keeps the class balance of the runs). Seeded: the same input gives the
  same interval. None below two runs per tag.
* Mann-Whitney U: two-sided, scipy.stats.mannwhitneyu (exact for small samples
  without ties, normal approximation with tie correction otherwise).
* Cliff's delta: P(candidate > base) - P(candidate < base), in [-1, 1]; magnitude by
  Romano et al. (2006): |d| < 0.147 negligible, < 0.33 small, < 0.474 medium,
  else large.

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MIN_RUNS = 10  # runs per tag and profile for a distribution claim; fewer => exploratory
CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 42
# Romano et al. 2006, "Appropriate statistics for ordinal level data"
CLIFF_THRESHOLDS = (("negligible", 0.147), ("small", 0.33), ("medium", 0.474))


def cliffs_delta(x: Sequence[float], y: Sequence[float]) -> float | None:
    """P(x > y) - P(x < y) over all pairs; None when either sample is empty."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size == 0 or b.size == 0:
        return None
    ys = np.sort(b)
    below = np.searchsorted(ys, a, side="left")  # per x: how many y are smaller
    above = ys.size - np.searchsorted(ys, a, side="right")  # and how many larger
    return float((below.sum() - above.sum()) / (a.size * b.size))


def magnitude(delta: float | None) -> str | None:
    """negligible / small / medium / large for a Cliff's delta."""
    if delta is None:
        return None
    for name, limit in CLIFF_THRESHOLDS:
        if abs(delta) < limit:
            return name
    return "large"


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value; None when either sample is empty."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size == 0 or b.size == 0:
        return None
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0  # every value equal: no evidence of a difference (scipy would divide by 0)
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _resample_medians(values: np.ndarray, strata: np.ndarray | None, rng: np.random.Generator,
                      resamples: int) -> np.ndarray:
    """Median of each bootstrap resample of `values` (resampled within each stratum)."""
    if strata is None:
        idx = rng.integers(0, values.size, size=(resamples, values.size))
    else:
        cols = []
        for s in np.unique(strata):
            members = np.flatnonzero(strata == s)
            cols.append(members[rng.integers(0, members.size, size=(resamples, members.size))])
        idx = np.concatenate(cols, axis=1)
    return np.median(values[idx], axis=1)


def bootstrap_median_diff(candidate: Sequence[float], base: Sequence[float], *,
                          candidate_strata: Sequence[str] | None = None,
                          base_strata: Sequence[str] | None = None,
                          confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                          seed: int = SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of median(candidate) - median(base).

    None when a sample has fewer than two values: one run says nothing about spread.
    """
    c, b = np.asarray(candidate, float), np.asarray(base, float)
    if c.size < 2 or b.size < 2:
        return None
    rng = np.random.default_rng(seed)
    cs = None if candidate_strata is None else np.asarray(candidate_strata, object)
    bs = None if base_strata is None else np.asarray(base_strata, object)
    diffs = _resample_medians(c, cs, rng, resamples) - _resample_medians(b, bs, rng, resamples)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class Difference:
    """Candidate against base for one metric, over runs."""

    n_base: int
    n_candidate: int
    base: float | None  # median over runs
    candidate: float | None
    diff: float | None  # candidate - base, in the metric's unit
    pct: float | None  # diff relative to |base|, percent; None when base is 0 or missing
    ci_low: float | None  # CI95 of diff (bootstrap over runs)
    ci_high: float | None
    p_value: float | None  # Mann-Whitney U, two-sided
    cliffs_delta: float | None  # > 0: candidate tends higher
    magnitude: str | None

    @property
    def ci_excludes_zero(self) -> bool:
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict:
        return asdict(self)


def compare_samples(candidate: Sequence[float], base: Sequence[float], *,
                    candidate_strata: Sequence[str] | None = None,
                    base_strata: Sequence[str] | None = None,
                    resamples: int = RESAMPLES, seed: int = SEED) -> Difference:
    """Every statistic of the comparison of two samples of per-run values."""
    c, b = np.asarray(candidate, float), np.asarray(base, float)
    med_c = float(np.median(c)) if c.size else None
    med_b = float(np.median(b)) if b.size else None
    diff = None if med_c is None or med_b is None else med_c - med_b
    pct = None if diff is None or med_b == 0 else diff / abs(med_b) * 100
    ci = bootstrap_median_diff(c, b, candidate_strata=candidate_strata, base_strata=base_strata,
                               resamples=resamples, seed=seed)
    delta = cliffs_delta(c, b)
    return Difference(
        n_base=int(b.size), n_candidate=int(c.size), base=med_b, candidate=med_c, diff=diff, pct=pct,
        ci_low=None if ci is None else ci[0], ci_high=None if ci is None else ci[1],
        p_value=mann_whitney_p(c, b), cliffs_delta=delta, magnitude=magnitude(delta))


def is_regression(d: Difference, max_pct: float, *, higher_is_worse: bool = True) -> bool:
    """The gate's rule: worse by more than max_pct percent, with the whole CI95 of the
    difference on the worse side of 0, and a non-negligible effect size."""
    if d.pct is None or d.ci_low is None or d.magnitude in (None, "negligible"):
        return False
    if higher_is_worse:
        return d.pct > max_pct and d.ci_low > 0 and d.cliffs_delta > 0
    return -d.pct > max_pct and d.ci_high < 0 and d.cliffs_delta < 0


# --- the other bootstraps of the analyzer and the benchmarks, all here ---------------


def bootstrap_median_ci(values: Sequence[float], *, strata: Sequence[str] | None = None,
                        resamples: int = RESAMPLES, seed: int = SEED,
                        confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """(median, low, high): the sample median and a percentile-bootstrap interval of it,
    resampling the values with replacement (inside each stratum when strata are given,
    so a resample keeps the sample's design). No interval (None) below two values."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("need a non-empty 1-d sample")
    median = float(np.median(x))
    if x.size < 2:
        return median, None, None
    st = None if strata is None else np.asarray(strata, object)
    if st is not None and st.shape != x.shape:
        raise ValueError(f"{x.size} values but {st.size} strata")
    medians = _resample_medians(x, st, np.random.default_rng(seed), resamples)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha])
    return median, float(low), float(high)


def resample_indices(strata: Sequence[str], resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices drawn with replacement inside each stratum. Seeded."""
    rng = np.random.default_rng(seed)
    strata = list(strata)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    out = np.empty((resamples, len(strata)), np.int64)
    for b in range(resamples):
        col = 0
        for key in sorted(groups):
            members = groups[key]
            out[b, col:col + len(members)] = rng.choice(members, size=len(members), replace=True)
            col += len(members)
    return out


def can_bootstrap(strata: Sequence[str]) -> bool:
    """A resample varies only when some stratum holds two values or more."""
    return any(n >= 2 for n in (list(strata).count(s) for s in set(strata)))


def percentile_ci(values: Sequence[float | None]) -> tuple[float, float] | None:
    """The 2.5th and 97.5th percentile of bootstrap replicates (None and NaN left out)."""
    v = np.array([x for x in values if x is not None and not math.isnan(x)], float)
    if v.size < 2:
        return None
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample standard deviation / mean. 0 when every value is equal (an error rate of
    0 in every rerun included); None below two values or for a zero mean."""
    if len(values) < 2:
        return None
    if max(values) == min(values):
        return 0.0
    mean = float(np.mean(values))
    return None if mean == 0 else float(np.std(values, ddof=1) / mean)
