"""Release comparison on run directories: `sloan compare TAG TAG [TAG]`, the baseline
rule, and the reproducibility of reruns (`sloan repro`).

Each run gives one value per metric (its TTFT p95, its error rate ...); a tag's value
is the median over its runs, and tags are compared over runs with analyze.stats
(difference of medians with a seeded bootstrap CI95, Mann-Whitney U, Cliff's delta).
The per-run values stay in the result (MetricComparison.samples, with the run each came
from), so a page can draw the distributions (`sloan compare --html`, analyze/html_report.py).
Runs are grouped by tag and profile: a comparison uses one profile, and it is
`exploratory` when any tag has fewer than stats.MIN_RUNS (10) runs of it. Only
complete runs count; incomplete ones are named in the notes. The class balance (runs
per scenario) of every tag is part of the result.

Metrics per run (requests of the load generator, all phases unless said):
  TTFT, TPOT, E2E p50/p95/p99 over ok requests (ms); tokens/s = output tokens of
  ok requests per second of their end-to-end time; error rate = sent requests not
  ok / sent (dropped_by_client is not sent); recorder overhead = mean overhead_pct
  of resources/.
Attribution (analyze.scoring.score_runs on each tag's labelled runs; left out, with
the reason, when it cannot be imported): scoring fits its model on a seeded half of
the runs and scores the rest. Precision, recall and F1 are pooled over the SLO
windows of the test runs, so each tag has one value with scoring's own CI95 and the
comparison shows the difference of the values only (no CI of the difference, no
p-value, no effect size). Detection delay is per test run and compared like the
other metrics. Scoring's own `exploratory` flag (fewer than 10 test runs per class)
is kept apart (Comparison.scoring_exploratory).

Baseline rule (docs/architecture.md, "Statistics rules"): compare `main` vs `v0.2-rc` vs the
previous stable tag; with no stable tag, the first GA anchor tag.
  * Tags come from the runs (their tag= folders). They are ordered by
    `git tag --sort=creatordate` in --repo PATH when given (tags git does not know
    follow, in semver-ish order), otherwise semver-ish: v0.1 < v0.2-rc < v0.2 <
    v0.10, pre-releases alpha < beta < pre < rc before their release, tags that are
    not versions after all versions, alphabetically.
  * Kinds: `main`; release candidate = a version with a pre-release suffix
    (v0.2-rc, v1.0.0-rc.2, v1.1-beta); GA anchor = a tag with a `ga` word
    (v1.0-ga, ga-anchor, ga_2026); stable = a version without suffix (v0.1.0).
  * Candidate: the newest release candidate. Reference: the newest stable tag
    ordered before the candidate (before every tag when there is no candidate);
    with no such stable tag, the first (oldest) GA anchor tag; with neither,
    `main`. Compared: reference, main, candidate (those that have runs).
  * `sloan compare` without TAGs applies the rule; with TAGs it compares exactly
    those, the first one as reference, and notes a baseline tag it left out.
  The result says which rule applied (Comparison.rule).
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from analyze import stats
from runfmt import queries
from runfmt.errors import DataError, SloError


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "" for a ratio 0..1
    higher_is_worse: bool
    source: str  # requests | resources | scoring


METRICS = (
    Metric("ttft_p50_ms", "TTFT p50", "ms", True, "requests"),
    Metric("ttft_p95_ms", "TTFT p95", "ms", True, "requests"),
    Metric("ttft_p99_ms", "TTFT p99", "ms", True, "requests"),
    Metric("tpot_p50_ms", "TPOT p50", "ms", True, "requests"),
    Metric("tpot_p95_ms", "TPOT p95", "ms", True, "requests"),
    Metric("tpot_p99_ms", "TPOT p99", "ms", True, "requests"),
    Metric("e2e_p50_ms", "E2E p50", "ms", True, "requests"),
    Metric("e2e_p95_ms", "E2E p95", "ms", True, "requests"),
    Metric("e2e_p99_ms", "E2E p99", "ms", True, "requests"),
    Metric("tokens_per_s", "tokens/s", "tok/s", False, "requests"),
    Metric("error_rate", "error rate", "", True, "requests"),
    Metric("precision", "attribution precision", "", False, "scoring"),
    Metric("recall", "attribution recall", "", False, "scoring"),
    Metric("f1", "attribution F1", "", False, "scoring"),
    Metric("detection_delay_s", "detection delay", "s", True, "scoring"),
    Metric("overhead_pct", "recorder overhead", "%", True, "resources"),
)
METRIC = {m.key: m for m in METRICS}
NO_PROFILE = "(none)"  # runs whose manifest names no profile (plain `slocap record`)


# --- runs and their metrics ---------------------------------------------------------


@dataclass
class RunRecord:
    tag: str
    scenario: str
    run: str
    seed: int | None
    profile: str
    complete: bool
    path: Path
    run_id: str = ""  # the manifest's (the folder name run=... in lab runs)
    overhead_method: str | None = None  # direct (BPF time counted), cpu_only, samples (an estimate)
    values: dict[str, float | None] = field(default_factory=dict)


def _hive(path: Path) -> dict[str, str]:
    return dict(part.split("=", 1) for part in path.parts if "=" in part)


def _open(paths, skip_bad: bool):
    from analyze.session import open_runs

    return open_runs([Path(p) for p in paths], skip_bad=skip_bad, offer_skip_bad=True)


def _has_hive_columns(con, view: str) -> bool:
    names = {row[0] for row in con.sql(f"DESCRIBE {view}").fetchall()}  # view: a fixed name
    return {"tag", "scenario", "run"} <= names


def _index(con) -> list[RunRecord]:
    out = []
    for r in queries.run(con, "compare_runs").to_pylist():
        path = Path(r["path"])
        hive = _hive(path)
        out.append(RunRecord(
            tag=hive.get("tag", r["tag"] or ""), scenario=hive.get("scenario", r["scenario"] or ""),
            run=hive.get("run", r["run_id"] or path.name), seed=r["seed"],
            profile=r["profile"] or NO_PROFILE, complete=bool(r["complete"]), path=path,
            run_id=r["run_id"] or hive.get("run", path.name)))
    return out


def _per_run(con, name: str, params: dict | None = None) -> dict[tuple[str, str, str], dict]:
    return {(r["tag"], r["scenario"], r["run"]): r for r in queries.run(con, name, params).to_pylist()}


def _fill_metrics(con, records: list[RunRecord], notes: list[str]) -> None:
    """Request and overhead metrics of each record, from the compare_* queries."""
    request_keys = [m.key for m in METRICS if m.source == "requests"]
    reqs = res = {}
    if _has_hive_columns(con, "requests"):
        reqs = _per_run(con, "compare_run_requests", {"phase": None})
    else:
        notes.append("no requests/ in the hive layout (tag=/scenario=/run=): latency metrics left out")
    if _has_hive_columns(con, "resources"):
        res = _per_run(con, "compare_run_overhead")
    for rec in records:
        key = (rec.tag, rec.scenario, rec.run)
        row = reqs.get(key, {})
        for k in request_keys:
            rec.values[k] = row.get(k)
        rec.values["overhead_pct"], rec.overhead_method = _overhead(rec.path, res.get(key, {}))


def _overhead(run_dir: Path, resources_row: dict) -> tuple[float | None, str | None]:
    """(overhead %, how it was counted): the manifest's direct accounting when it has one
    (capture/accounting.py), its median one-second window (the whole-run figure also holds
    the start-up, which weighs on a short run), else the mean of the resource samples, which
    leave BPF time out when the kernel's BPF stats were off."""
    from runfmt.manifest import read_manifest

    try:
        direct = read_manifest(run_dir).get("overhead")
    except SloError:
        direct = None
    if isinstance(direct, dict):
        value = next((direct[k] for k in ("window_median_pct", "pct") if isinstance(direct.get(k), (int, float))),
                     None)
        if value is not None:
            return float(value), str(direct.get("method") or "direct")
    value = resources_row.get("overhead_pct")
    return value, None if value is None else "samples"


POOLED_KEYS = ("precision", "recall", "f1")  # one value per tag from scoring, over windows


def _score_tags(chosen: dict[str, list[RunRecord]], config: dict | None,
                notes: list[str]) -> tuple[dict[str, object], str]:
    """analyze.scoring.score_runs on each tag's labelled runs; returns the ScoreResult per
    tag and where the attribution metrics come from (or why they are missing).

    Precision, recall and F1 are pooled by scoring over the SLO windows of a tag's test
    runs (macro over domains, CI95 bootstrap over runs): one value per tag, no per-run
    sample. Detection delay is per test run (ScoreResult.runs[].delay_s)."""
    try:
        from analyze.scoring import score_runs
    except ImportError as exc:
        return {}, f"unavailable: analyze.scoring cannot be imported ({exc})"
    if config is None:
        from runfmt.config import load_config

        config = load_config()
    results = {}
    for tag, rs in chosen.items():
        labelled = [r.path for r in rs if (r.path / "labels.parquet").is_file()]
        if not labelled:
            notes.append(f"{tag}: no run with labels.parquet, so no attribution scores")
            continue
        try:
            result = score_runs(labelled, config)
        except SloError as exc:
            notes.append(f"{tag}: attribution could not be scored: {exc.message}")
            continue
        results[tag] = result
        delays = {run.get("run_id"): run.get("delay_s") for run in result.runs if run.get("role") == "test"}
        for r in rs:
            r.values["detection_delay_s"] = delays.get(r.run_id)
        if result.exploratory:
            notes.append(f"{tag}: attribution scores are exploratory: " + "; ".join(result.exploratory_reasons))
    return results, ("analyze.scoring.score_runs per tag: the model is fitted on a seeded half of the tag's "
                     "runs (per scenario) and scored on the other half; precision/recall/F1 pooled over "
                     "windows with scoring's CI95, detection delay per test run")


def load_runs(paths, *, skip_bad: bool = False) -> tuple[list[RunRecord], list[str]]:
    """Every run below `paths` with its request and overhead metrics (no attribution).

    Returns the records and notes (e.g. damaged files skipped with skip_bad)."""
    runs = _open(paths, skip_bad)
    try:
        records, notes = runs.use(_records)
    finally:
        runs.con.close()
    return records, [f"skipped: {s}" for s in runs.skipped] + notes


def _records(con) -> tuple[list[RunRecord], list[str]]:
    """Each run's record with its request and overhead metrics, and notes on what is missing."""
    notes: list[str] = []
    records = _index(con)
    _fill_metrics(con, records, notes)
    return records, notes


# --- tags: kinds, order, the baseline rule --------------------------------------------

_VERSION = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-_.+]?(alpha|beta|pre|rc|a|b)(?:[-_.]?(\d+))?)?$", re.I)
_GA = re.compile(r"(?:^|[-_.])ga(?:$|[-_.])", re.I)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "pre": 2, "rc": 3}


def tag_kind(tag: str) -> str:
    """main | rc (any pre-release) | ga_anchor | stable | other."""
    if tag == "main":
        return "main"
    if _GA.search(tag):
        return "ga_anchor"
    m = _VERSION.match(tag)
    if not m:
        return "other"
    return "rc" if m.group(4) else "stable"


def semver_key(tag: str) -> tuple:
    """Sort key: versions by number (a pre-release before its release), then the rest."""
    m = _VERSION.match(_GA.sub("", tag)) if _GA.search(tag) else _VERSION.match(tag)
    if not m:
        return (1, tag)
    major, minor, patch, pre, pre_n = m.groups()
    release = (int(major), int(minor or 0), int(patch or 0))
    pre_part = (1, 0, 0) if pre is None else (0, _PRE_RANK[pre.lower()], int(pre_n or 0))
    return (0, release, pre_part, 1 if _GA.search(tag) else 0, tag)


def git_tags(repo: Path) -> list[str]:
    """Tags of a git repository, oldest first (`git tag --sort=creatordate`)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "tag", "--sort=creatordate"],
                             capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise DataError(f"cannot list the git tags of {repo}: {detail.strip()}",
                        "pass --repo with a git checkout, or leave it out for semver-ish order") from None
    return [t for t in out.stdout.splitlines() if t]


def order_tags(tags, repo: Path | None = None) -> tuple[list[str], str]:
    """Tags oldest first, and how they were ordered."""
    tags = sorted(set(tags), key=semver_key)
    if repo is None:
        return tags, "semver-ish order"
    known = git_tags(repo)
    position = {t: i for i, t in enumerate(known)}
    in_git = sorted((t for t in tags if t in position), key=position.get)
    rest = [t for t in tags if t not in position]
    how = f"git tag --sort=creatordate in {repo}"
    not_git = [t for t in rest if t != "main"]
    if not_git:
        how += f"; not git tags, after them in semver-ish order: {', '.join(not_git)}"
    return in_git + rest, how


@dataclass(frozen=True)
class BaselineChoice:
    tags: list[str]  # the reference first
    reference: str
    kind: str  # previous_stable | ga_anchor | no_baseline | given
    rule: str  # one sentence for the report


def baseline_rule(available, repo: Path | None = None) -> BaselineChoice:
    """The tags to compare and the reference among `available` (see the module doc)."""
    available = set(available)
    ordered, how = order_tags([t for t in available if t != "main"], repo)
    candidates = [t for t in ordered if tag_kind(t) == "rc"]
    candidate = candidates[-1] if candidates else None
    before = ordered[: ordered.index(candidate)] if candidate else ordered
    stable = [t for t in before if tag_kind(t) == "stable"]
    anchors = [t for t in ordered if tag_kind(t) == "ga_anchor"]
    against = f"before {candidate}" if candidate else "(no release candidate)"
    if stable:
        reference, kind = stable[-1], "previous_stable"
        rule = f"baseline rule: previous stable tag {reference} {against}, ordered by {how}"
    elif anchors:
        reference, kind = anchors[0], "ga_anchor"
        rule = f"baseline rule: no stable tag {against}, so the first GA anchor tag {reference}, ordered by {how}"
    else:
        reference, kind = ("main" if "main" in available else None), "no_baseline"
        rule = "baseline rule: no stable or GA anchor tag in the runs, so main is the reference"
    tags = [t for t in dict.fromkeys([reference, "main", candidate]) if t in available]
    if len(tags) < 2:
        raise DataError(
            f"the baseline rule found fewer than two tags to compare among: {', '.join(sorted(available))}",
            "it needs runs of main, a release candidate (v0.2-rc) or a stable / GA anchor tag; "
            "or name the tags: sloan compare TAG TAG")
    return BaselineChoice(tags, tags[0], kind, rule)


# --- the comparison -------------------------------------------------------------------


@dataclass
class TagRuns:
    tag: str
    profile: str
    runs: int
    scenarios: dict[str, int]  # class balance: runs per scenario
    overhead_methods: dict[str, int] = field(default_factory=dict)  # how overhead was counted -> runs


@dataclass
class MetricComparison:
    metric: Metric
    values: dict[str, float | None]  # tag -> median over runs (pooled: scoring's value)
    n: dict[str, int]  # tag -> runs with a value (pooled: test runs)
    diffs: dict[str, stats.Difference]  # tag (not the reference) -> against the reference
    pooled: bool = False  # one value per tag, no per-run sample: no CI of the difference, p or delta
    tag_ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # pooled: per-tag CI95
    # tag -> the per-run values behind the median, in run order, and where each comes from
    # ("scenario/run", as in the run's folder names); empty for pooled metrics
    samples: dict[str, list[float]] = field(default_factory=dict)
    sample_runs: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self.metric), "values": self.values, "n": self.n, "pooled": self.pooled,
                "tag_ci95": {t: None if ci is None else list(ci) for t, ci in self.tag_ci.items()},
                "diffs": {t: d.to_dict() for t, d in self.diffs.items()},
                "samples": {t: [{"run": r, "value": v} for r, v in zip(self.sample_runs.get(t, []), vs)]
                            for t, vs in self.samples.items()}}


@dataclass
class Comparison:
    tags: list[str]
    reference: str
    rule: str
    rule_kind: str
    profile: str
    exploratory: bool
    tag_runs: list[TagRuns]
    metrics: list[MetricComparison]
    attribution: str  # where the attribution metrics come from, or why they are missing
    notes: list[str]
    seed: int
    resamples: int
    min_runs: int = stats.MIN_RUNS
    scoring_exploratory: dict[str, list[str]] = field(default_factory=dict)  # tag -> scoring's reasons

    def metric(self, key: str) -> MetricComparison | None:
        return next((m for m in self.metrics if m.metric.key == key), None)

    def runs_of(self, tag: str) -> TagRuns:
        return next(t for t in self.tag_runs if t.tag == tag)

    @property
    def balanced(self) -> bool:
        """Every tag ran the same scenarios."""
        return len({frozenset(t.scenarios) for t in self.tag_runs}) <= 1

    def to_dict(self) -> dict:
        return {
            "tags": self.tags, "reference": self.reference, "rule": self.rule, "rule_kind": self.rule_kind,
            "profile": self.profile, "exploratory": self.exploratory, "min_runs": self.min_runs,
            "runs": [asdict(t) for t in self.tag_runs], "balanced": self.balanced,
            "metrics": [m.to_dict() for m in self.metrics], "attribution": self.attribution,
            "scoring_exploratory": self.scoring_exploratory,
            "notes": self.notes, "bootstrap": {"seed": self.seed, "resamples": self.resamples,
                                               "confidence": stats.CONFIDENCE},
        }


def _count(records) -> str:
    c = Counter(r.tag for r in records)
    return ", ".join(f"{t} ({n} run{'s' if n != 1 else ''})" for t, n in sorted(c.items()))


def _select(records: list[RunRecord], tags: list[str], roots: str, *, profile: str | None,
            scenarios: tuple[str, ...], notes: list[str]) -> tuple[dict[str, list[RunRecord]], str]:
    """The runs of each tag that enter the comparison, and the one profile they share."""
    for t in tags:
        if not any(r.tag == t for r in records):
            raise DataError(f"tag {t!r} has no runs under {roots}", f"tags found: {_count(records)}")
    chosen: dict[str, list[RunRecord]] = {}
    for t in tags:
        mine = [r for r in records if r.tag == t]
        usable = [r for r in mine if r.complete and (not scenarios or r.scenario in scenarios)]
        incomplete = [r for r in mine if not r.complete]
        if incomplete:
            notes.append(f"{t}: {len(incomplete)} incomplete run(s) left out: "
                         + ", ".join(str(r.path) for r in incomplete))
        if profile is not None:
            usable = [r for r in usable if r.profile == profile]
        if not usable:
            what = "complete run"
            what += f" of profile {profile}" if profile else ""
            what += f" of scenario {', '.join(scenarios)}" if scenarios else ""
            have = Counter(f"{r.profile}/{r.scenario}{'' if r.complete else ' incomplete'}" for r in mine)
            raise DataError(f"tag {t!r} has no {what} under {roots}",
                            "its runs (profile/scenario): "
                            + ", ".join(f"{k} x{n}" for k, n in sorted(have.items())))
        chosen[t] = usable
    profiles = {t: Counter(r.profile for r in rs) for t, rs in chosen.items()}
    for t, c in profiles.items():
        if len(c) > 1:
            mix = ", ".join(f"{p} ({n} run{'s' if n != 1 else ''})" for p, n in sorted(c.items()))
            raise DataError(f"tag {t!r} has runs of mixed profiles: {mix}",
                            "a comparison uses one profile: pass --profile "
                            + " or --profile ".join(sorted(c)))
    distinct = {next(iter(c)) for c in profiles.values()}
    if len(distinct) > 1:
        each = ", ".join(f"{t} {next(iter(c))}" for t, c in profiles.items())
        raise DataError(f"the tags were recorded with different profiles: {each}",
                        "compare runs of one profile: record the missing ones, or pass --profile P")
    return chosen, distinct.pop()


def compare_tags(paths, tags: list[str] | None = None, *, profile: str | None = None,
                 scenarios: tuple[str, ...] = (), repo: Path | None = None, config: dict | None = None,
                 seed: int = stats.SEED, resamples: int = stats.RESAMPLES,
                 skip_bad: bool = False) -> Comparison:
    """Compare tags over their runs below `paths`; without `tags`, the baseline rule picks."""
    records, notes = load_runs(paths, skip_bad=skip_bad)
    roots = ", ".join(str(p) for p in paths)
    if tags:
        if len(set(tags)) != len(tags):
            raise DataError(f"a tag is named twice: {' '.join(tags)}", "name each tag once")
        tags = list(tags)
        choice = BaselineChoice(tags, tags[0], "given", f"tags given: the first, {tags[0]}, is the reference")
        present = {r.tag for r in records if r.complete}
        if present - set(tags):
            try:
                rule = baseline_rule(present, repo)
            except DataError:
                rule = None
            if rule is not None and rule.kind != "no_baseline" and rule.reference not in tags:
                notes.append(f"{rule.rule}: it has runs too; add it as a TAG to compare against it")
    else:
        choice = baseline_rule({r.tag for r in records if r.complete}, repo)
    chosen, used_profile = _select(records, choice.tags, roots, profile=profile, scenarios=scenarios,
                                   notes=notes)
    for r in (r for rs in chosen.values() for r in rs):
        r.values["detection_delay_s"] = None
    scores, attribution = _score_tags(chosen, config, notes)
    for t, rs in chosen.items():  # missing data: cannot judge, say which runs
        if t not in scores and all(v is None for r in rs for v in r.values.values()):
            named = ", ".join(str(r.path) for r in rs[:3]) + (f" and {len(rs) - 3} more" if len(rs) > 3 else "")
            raise DataError(f"tag {t!r}: nothing to compare: its runs hold no requests or recorder resources "
                            f"({named})", "record those runs again, or compare other tags")

    tag_runs = [TagRuns(t, used_profile, len(rs), dict(sorted(Counter(r.scenario for r in rs).items())),
                        dict(sorted(Counter(r.overhead_method or "none" for r in rs).items())))
                for t, rs in chosen.items()]
    exploratory = min(t.runs for t in tag_runs) < stats.MIN_RUNS
    if len({frozenset(t.scenarios) for t in tag_runs}) > 1:
        notes.append("class balance differs: the tags did not run the same scenarios "
                     "(" + "; ".join(f"{t.tag}: {', '.join(t.scenarios)}" for t in tag_runs) + ")")
    metrics = []
    ref = choice.reference
    for m in METRICS:
        if m.source == "scoring" and attribution.startswith("unavailable"):
            continue
        if m.key in POOLED_KEYS:
            metrics.append(_pooled(m, choice.tags, scores))
            continue
        with_value = {t: [r for r in rs if r.values.get(m.key) is not None] for t, rs in chosen.items()}
        samples = {t: [(r.values[m.key], r.scenario) for r in rs] for t, rs in with_value.items()}
        values = {t: (float(np.median([v for v, _ in s])) if s else None) for t, s in samples.items()}
        diffs = {}
        for t in choice.tags[1:]:
            c, b = samples[t], samples[ref]
            diffs[t] = stats.compare_samples([v for v, _ in c], [v for v, _ in b],
                                             candidate_strata=[s for _, s in c], base_strata=[s for _, s in b],
                                             resamples=resamples, seed=seed)
        metrics.append(MetricComparison(
            m, values, {t: len(s) for t, s in samples.items()}, diffs,
            samples={t: [float(v) for v, _ in s] for t, s in samples.items()},
            sample_runs={t: [f"{r.scenario}/{r.run}" for r in rs] for t, rs in with_value.items()}))
    return Comparison(tags=choice.tags, reference=ref, rule=choice.rule, rule_kind=choice.kind,
                      profile=used_profile, exploratory=exploratory, tag_runs=tag_runs, metrics=metrics,
                      attribution=attribution, notes=notes, seed=seed, resamples=resamples,
                      scoring_exploratory={t: list(r.exploratory_reasons) for t, r in scores.items()
                                           if r.exploratory})


def _pooled(m: Metric, tags: list[str], scores: dict[str, object]) -> MetricComparison:
    """A metric scoring pools over a tag's windows: the value and CI95 per tag, the
    difference of the values; no CI of the difference, no test, no effect size."""
    values, cis, n = {}, {}, {}
    for t in tags:
        score = getattr(scores.get(t), m.key, None)
        values[t] = None if score is None else score.value
        cis[t] = None if score is None or score.ci95 is None else tuple(score.ci95)
        n[t] = len(scores[t].test_runs) if t in scores else 0
    ref = tags[0]
    diffs = {}
    for t in tags[1:]:
        b, c = values[ref], values[t]
        diff = None if b is None or c is None else c - b
        diffs[t] = stats.Difference(
            n_base=n[ref], n_candidate=n[t], base=b, candidate=c, diff=diff,
            pct=None if diff is None or not b else diff / abs(b) * 100, ci_low=None, ci_high=None,
            p_value=None, cliffs_delta=None, magnitude=None)
    return MetricComparison(m, values, n, diffs, pooled=True, tag_ci=cis)
