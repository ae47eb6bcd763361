"""sloan compare / gate / repro end to end on small hand-made run directories, and the
baseline rule.

Each run below is written out by `make_run`: N requests whose TTFT spreads evenly from
0.5x a chosen level in steps of 1/N (so its p95 is 1.42625x the level at N = 40), resources at a chosen overhead, a manifest with tag,
profile and seed. Attribution metrics come from a stand-in `analyze.scoring` module
(installed with monkeypatch) that pools the scores written into the manifests, so
the gate's logic is tested apart from the scoring itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analyze.compare import (
    baseline_rule,
    compare_tags,
    order_tags,
    semver_key,
    tag_kind,
)
from tests.support.runs import write_run

T0 = 1_800_000_000_000_000_000
GOOD_SCORE = {"precision": 0.95, "recall": 0.9, "f1": 0.92, "detection_delay_s": 2.0}


def make_run(root: Path, tag: str, run_id: str, *, scenario: str = "dns_latency", profile: str = "smoke",
             seed: int = 42, ttft: float = 500.0, requests: int = 40, errors: int = 0, overhead: float = 2.0,
             complete: bool = True, score: dict | None = None, labelled: bool = True,
             scoring_exploratory: bool = False, direct_overhead: bool = True) -> Path:
    phases = ("baseline", "fault", "recovery")
    rows = []
    for i in range(requests):
        t = ttft * (0.5 + i / requests)
        ok = i >= errors
        rows.append({"request_id": f"{run_id}-{i}", "phase": phases[i * 3 // requests], "prompt_class": "short",
                     "scheduled_ns": T0 + i * 50_000_000, "sent_ns": T0 + i * 50_000_000,
                     "ttft_ms": t if ok else None, "tpot_ms": 25.0 if ok else None,
                     "e2e_ms": t + 25.0 * 79 if ok else None, "output_tokens": 80 if ok else None,
                     "status": "ok" if ok else "http_500", "http_status": 200 if ok else 500})
    samples = [{"ts_ns": T0 + s * 1_000_000_000, "interval_s": 1.0, "overhead_pct": overhead, "shed_level": 0}
               for s in range(5)]
    tables = {"requests": rows, "resources": samples}
    if labelled:
        tables["labels"] = [{"run_id": run_id, "scenario": scenario, "domain": "network_dns", "target": "dns",
                             "start_ns": T0 + 700_000_000, "end_ns": T0 + 1_400_000_000}]
    return write_run(root, run_id, tag=tag, scenario=scenario, manifest={
        "seed": seed, "profile": profile, "complete": complete,
        "overhead": {"method": "direct" if direct_overhead else "cpu_only", "pct": overhead},
        "test_score": score or GOOD_SCORE, "test_exploratory": scoring_exploratory}, **tables)


def make_tag(root: Path, tag: str, runs: int, *, scale: float = 1.0, **kw) -> None:
    """`runs` runs of one tag; their TTFT levels differ by up to +-4 % from run to run."""
    for k in range(runs):
        make_run(root, tag, f"{tag}-{k:02d}", ttft=500.0 * scale * (0.96 + 0.08 * k / max(runs - 1, 1)), **kw)


@pytest.fixture
def scoring(monkeypatch):
    """A stand-in analyze.scoring: score_runs pools the `test_score` of the manifests it is
    given (the median, CI95 +-0.02), every run a test run; `test_exploratory` in a manifest
    makes the result exploratory."""
    module = types.ModuleType("analyze.scoring")

    def score_runs(paths, config):
        manifests = [json.loads((Path(p) / "manifest.json").read_text()) for p in paths]

        def pooled(key):
            v = float(np.median([m["test_score"][key] for m in manifests]))
            return types.SimpleNamespace(value=v, ci95=(v - 0.02, v + 0.02))

        exploratory = any(m.get("test_exploratory") for m in manifests)
        return types.SimpleNamespace(
            precision=pooled("precision"), recall=pooled("recall"), f1=pooled("f1"),
            test_runs=[m["run_id"] for m in manifests],
            runs=[{"run_id": m["run_id"], "role": "test", "delay_s": m["test_score"]["detection_delay_s"]}
                  for m in manifests],
            exploratory=exploratory, exploratory_reasons=["class none has 1 test run(s) < 10"] if exploratory else [])

    module.score_runs = score_runs
    monkeypatch.setitem(sys.modules, "analyze.scoring", module)


@pytest.fixture
def no_scoring(monkeypatch):
    monkeypatch.setitem(sys.modules, "analyze.scoring", None)  # import raises ImportError


def cells(line: str) -> list[str]:
    """The cells of a table row as a pipe shows it: plain columns, two spaces or more apart."""
    return re.split(r" {2,}", line.strip())


# --- compare ----------------------------------------------------------------------------


def test_compare_prints_the_table_with_ci95_and_run_counts(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 3)
    make_tag(tmp_path, "v0.2-rc", 3, scale=1.2)
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "tags given: the first, main, is the reference"
    assert lines[1] == ("EXPLORATORY: fewer than 10 runs per tag and profile (main 3, v0.2-rc 3); "
                        "no distribution claim, never a release gate.")
    header = next(line for line in lines if "CI95 Δ" in line)
    assert cells(header) == [
        "metric", "main (ref)", "v0.2-rc", "Δ", "CI95 Δ", "p MWU", "Cliff's δ"]
    ttft = next(line for line in lines if "TTFT p95" in line)
    # the middle run of each tag is at 1.0x its level: TTFT p95 1.42625 x 500 ms = 713.1 ms, x 1.2 = 855.8 ms
    assert cells(ttft) == [
        "TTFT p95", "713.1 ms", "855.8 ms", "+142.6 ms (+20.0 %)", "[79.9 ms, 205.4 ms]", "0.100", "+1.00 large"]
    # with 3 runs a tag, the bootstrap's 2.5 % / 97.5 % points are the extremes: slowest base run
    # against fastest candidate run (821.5 - 741.7 ms) and the other way round (890.0 - 684.6 ms)
    rows = [cells(line) for line in lines]
    assert ["scenario", "main", "v0.2-rc"] in rows
    assert ["dns_latency", "3", "3"] in rows and ["all runs (smoke)", "3", "3"] in rows
    assert "attribution precision" in r.output and "recorder overhead" in r.output
    assert "attribution: analyze.scoring.score_runs per tag" in r.output
    assert cells(next(line for line in lines if "attribution precision" in line)) == [
        "attribution precision", "0.950 [0.930, 0.970] (3 test runs)", "0.950 [0.930, 0.970] (3 test runs)",
        "+0.000 (+0.0 %)", "n/a: pooled", "n/a", "n/a"]
    assert cells(next(line for line in lines if "detection delay" in line)) == [
        "detection delay", "2.00 s", "2.00 s", "+0.00 s (+0.0 %)", "[0.00 s, 0.00 s]", "1.000", "+0.00 negligible"]


def test_compare_is_not_exploratory_at_10_runs_per_tag(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10)
    cmp = compare_tags([tmp_path], ["main", "v0.2-rc"], resamples=1000)
    assert not cmp.exploratory
    assert [(t.tag, t.runs, t.scenarios) for t in cmp.tag_runs] == [
        ("main", 10, {"dns_latency": 10}), ("v0.2-rc", 10, {"dns_latency": 10})]
    d = cmp.metric("ttft_p95_ms").diffs["v0.2-rc"]
    assert d.diff == pytest.approx(0) and d.magnitude == "negligible" and d.ci_low <= 0 <= d.ci_high
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path)
    assert r.exit_code == 0 and "EXPLORATORY" not in r.output


def test_compare_json_and_three_tags(tmp_path, no_scoring, sloan):
    for tag in ("v0.1.0", "main", "v0.2-rc"):
        make_tag(tmp_path, tag, 2)
    r = sloan("compare", "v0.1.0", "main", "v0.2-rc", "--runs", tmp_path, "--json", "-")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["reference"] == "v0.1.0" and out["exploratory"] is True
    ttft = next(m for m in out["metrics"] if m["key"] == "ttft_p95_ms")
    assert set(ttft["diffs"]) == {"main", "v0.2-rc"}
    assert out["attribution"].startswith("unavailable: analyze.scoring cannot be imported")
    assert not any(m["source"] == "scoring" for m in out["metrics"])


def test_compare_without_tags_applies_the_baseline_rule(tmp_path, no_scoring, sloan):
    for tag in ("v0.1.0", "main", "v0.2-rc", "v0.0.9"):
        make_tag(tmp_path, tag, 2)
    r = sloan("compare", "--runs", tmp_path)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == (
        "baseline rule: previous stable tag v0.1.0 before v0.2-rc, ordered by semver-ish order")
    assert "v0.1.0 (ref)" in r.output
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path)
    assert ("note: baseline rule: previous stable tag v0.1.0 before v0.2-rc, ordered by semver-ish order: "
            "it has runs too; add it as a TAG to compare against it") in r.output


def test_incomplete_runs_are_left_out_and_named(tmp_path, no_scoring):
    make_tag(tmp_path, "main", 2)
    make_tag(tmp_path, "v0.2-rc", 2)
    bad = make_run(tmp_path, "v0.2-rc", "cut", complete=False, ttft=50_000)
    cmp = compare_tags([tmp_path], ["main", "v0.2-rc"])
    assert cmp.runs_of("v0.2-rc").runs == 2
    assert cmp.notes == [f"v0.2-rc: 1 incomplete run(s) left out: {bad}"]


# --- bad input: exit 2 with what is missing ----------------------------------------------


def test_unknown_tag(tmp_path, no_scoring, sloan):
    make_tag(tmp_path, "main", 3)
    make_tag(tmp_path, "v0.2-rc", 1)
    r = sloan("compare", "main", "v9", "--runs", tmp_path)
    assert r.exit_code == 2
    assert r.output.splitlines() == [f"error: tag 'v9' has no runs under {tmp_path}",
                                     "  tags found: main (3 runs), v0.2-rc (1 run)"]


def test_a_tag_with_zero_usable_runs(tmp_path, no_scoring, sloan):
    make_tag(tmp_path, "main", 3)
    make_run(tmp_path, "v0.2-rc", "cut", complete=False)
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path)
    assert r.exit_code == 2
    assert r.output.splitlines() == [f"error: tag 'v0.2-rc' has no complete run under {tmp_path}",
                                     "  its runs (profile/scenario): smoke/dns_latency incomplete x1"]
    make_run(tmp_path, "v0.2-rc", "r1")
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path, "--profile", "full")
    assert r.exit_code == 2
    assert r.output.splitlines()[0] == f"error: tag 'main' has no complete run of profile full under {tmp_path}"


def test_mixed_profiles_are_named_and_profile_picks_one(tmp_path, no_scoring, sloan):
    make_tag(tmp_path, "main", 3)
    make_run(tmp_path, "main", "long", profile="full")
    make_tag(tmp_path, "v0.2-rc", 3)
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path)
    assert r.exit_code == 2
    assert r.output.splitlines() == [
        "error: tag 'main' has runs of mixed profiles: full (1 run), smoke (3 runs)",
        "  a comparison uses one profile: pass --profile full or --profile smoke"]
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path, "--profile", "smoke")
    assert r.exit_code == 0, r.output


def test_tags_of_different_profiles(tmp_path, no_scoring, sloan):
    make_tag(tmp_path, "main", 2)
    make_tag(tmp_path, "v0.2-rc", 2, profile="full")
    r = sloan("compare", "main", "v0.2-rc", "--runs", tmp_path)
    assert r.exit_code == 2
    assert r.output.splitlines()[0] == "error: the tags were recorded with different profiles: main smoke, v0.2-rc full"


def test_bad_usage(tmp_path, sloan):
    r = sloan("compare", "main", "--runs", tmp_path)
    assert r.exit_code == 2
    assert "give two or three TAGs, or none for the baseline rule (got 1)" in r.output
    r = sloan("compare", "main", "main", "--runs", tmp_path / "nothing")
    assert r.exit_code == 2
    assert r.output.splitlines()[0] == f"error: {tmp_path / 'nothing'} does not exist"


# --- gate: 0 pass, 1 regression, 2 cannot judge -----------------------------------------


def gate_args(root, *extra):
    return ("--runs", root, "--base", "main", "--candidate", "v0.2-rc", "--resamples", 2000, *extra)


def test_gate_passes_equal_releases(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10, scale=1.02)
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "## Release gate: v0.2-rc against main — PASS"
    assert lines[2] == "every check passed. Exit code 0."
    assert "| TTFT p95 regression | pass | +14.3 ms (+2.0 %)" in r.output
    assert "| attribution precision | pass | 0.950 [0.930, 0.970] (10 test runs) | >= 0.9 |" in r.output
    assert "| recorder overhead | pass | 2.00 % | <= 5 % (safety.max_overhead_pct) |" in r.output


def test_gate_fails_a_ttft_p95_regression(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10, scale=1.15)
    summary, artifact = tmp_path / "gate.md", tmp_path / "gate.json"
    r = sloan("gate", *gate_args(tmp_path, "--summary", summary, "--json", artifact))
    assert r.exit_code == 1, r.output
    assert r.output == f"gate: regression (failed: TTFT p95 regression); exit 1; summary {summary}\n"
    assert summary.read_text().startswith("## Release gate: v0.2-rc against main — REGRESSION")
    out = json.loads(artifact.read_text())
    assert out["verdict"] == "regression" and out["exit_code"] == 1
    check = out["checks"][0]
    assert check["name"] == "TTFT p95 regression" and check["status"] == "fail"
    assert check["measured"].startswith("+107.0 ms (+15.0 %), CI95 [")


@pytest.mark.parametrize("kw, failed", [
    ({"score": {**GOOD_SCORE, "precision": 0.5}}, "attribution precision"),
    ({"score": {**GOOD_SCORE, "recall": 0.6}}, "attribution recall"),
    ({"overhead": 7.5}, "recorder overhead"),
])
def test_gate_fails_attribution_and_overhead(tmp_path, scoring, kw, failed, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10, **kw)
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 1, r.output
    assert r.output.splitlines()[2] == f"failed: {failed}. Exit code 1."


def test_gate_cannot_judge_overhead_without_direct_accounting(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10, direct_overhead=False)
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 2, r.output
    assert "| recorder overhead | cannot_judge | 2.00 % (estimate) |" in r.output
    assert "10 run(s) of v0.2-rc have no direct accounting with BPF run time (cpu_only 10)" in r.output


def test_gate_on_an_exploratory_comparison_exits_2_unless_allowed(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 3)
    make_tag(tmp_path, "v0.2-rc", 3, scale=1.3)
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 2, r.output
    assert r.output.splitlines()[0] == "## Release gate: v0.2-rc against main — CANNOT JUDGE"
    assert r.output.splitlines()[2] == (
        "exploratory: fewer than 10 runs per tag and profile (main 3, v0.2-rc 3); an exploratory comparison "
        "never passes or fails a release (--allow-exploratory judges it anyway). Exit code 2.")
    assert "| TTFT p95 regression | fail |" in r.output  # reported, not acted on
    r = sloan("gate", *gate_args(tmp_path, "--allow-exploratory"))
    assert r.exit_code == 1, r.output


def test_gate_cannot_judge_without_attribution(tmp_path, no_scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10)
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 2, r.output
    assert r.output.splitlines()[2] == "cannot judge: attribution precision, attribution recall. Exit code 2."
    assert "attribution metrics unavailable: analyze.scoring cannot be imported" in r.output


def test_gate_cannot_judge_when_scoring_is_exploratory(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10, scoring_exploratory=True)
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 2, r.output
    assert r.output.splitlines()[2] == "cannot judge: attribution precision, attribution recall. Exit code 2."
    assert ("scoring is exploratory (class none has 1 test run(s) < 10): it never passes the gate"
            in r.output)
    r = sloan("gate", *gate_args(tmp_path, "--allow-exploratory"))
    assert r.exit_code == 0, r.output


def test_gate_cannot_judge_without_labelled_runs(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10, labelled=False)
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 2, r.output
    assert ("| attribution recall | cannot_judge | n/a | >= 0.85 | no attribution recall for v0.2-rc "
            "(no labelled run, or no window to score) |") in r.output
    assert "- v0.2-rc: no run with labels.parquet, so no attribution scores" in r.output


def test_gate_cannot_judge_different_scenarios(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    make_tag(tmp_path, "v0.2-rc", 10, scenario="tcp_loss")
    r = sloan("gate", *gate_args(tmp_path))
    assert r.exit_code == 2, r.output
    assert "| class balance | cannot_judge | main: dns_latency 10; v0.2-rc: tcp_loss 10 |" in r.output


def test_gate_bad_input_exits_2(tmp_path, scoring, sloan):
    make_tag(tmp_path, "main", 10)
    r = sloan("gate", "--runs", tmp_path, "--base", "main", "--candidate", "v0.2-rc")
    assert r.exit_code == 2
    assert r.output.splitlines() == [f"error: tag 'v0.2-rc' has no runs under {tmp_path}",
                                     "  tags found: main (10 runs)"]


# --- repro ------------------------------------------------------------------------------


def test_repro_flags_a_metric_that_varies_more_than_10_percent(tmp_path, sloan):
    for k, level in enumerate((500, 510, 490)):
        make_run(tmp_path, "main", f"steady-{k}", scenario="dns_latency", ttft=level)
    for k, level in enumerate((500, 800, 350)):
        make_run(tmp_path, "main", f"noisy-{k}", scenario="tcp_loss", ttft=level)
    r = sloan("repro", "--runs", tmp_path, "--json", "-")
    assert r.exit_code == 0, r.output
    rows = {(x["scenario"], x["metric"]): x for x in json.loads(r.output)["rows"]}
    assert rows[("dns_latency", "ttft_p95_ms")]["cv"] == pytest.approx(0.02)
    assert not rows[("dns_latency", "ttft_p95_ms")]["flagged"]
    assert rows[("dns_latency", "error_rate")]["cv"] == 0.0  # 0 in every rerun
    assert rows[("tcp_loss", "ttft_p95_ms")]["flagged"] and rows[("tcp_loss", "fault_ttft_p95_ms")]["flagged"]
    assert rows[("tcp_loss", "ttft_p95_ms")]["runs"] == 3
    r = sloan("repro", "--runs", tmp_path, "--check")
    assert r.exit_code == 1
    assert "3 of 8 metric(s) flagged." in r.output


def test_repro_with_one_run_per_group_cannot_judge(tmp_path, sloan):
    make_run(tmp_path, "main", "once")
    r = sloan("repro", "--runs", tmp_path, "--check")
    assert r.exit_code == 2
    assert "n/a (< 2 runs)" in r.output
    assert "note: main/dns_latency seed 42 smoke: 1 rerun(s), the reproducibility rule asks for 3" in r.output


# --- baseline rule ----------------------------------------------------------------------


def test_tag_kinds_and_semver_order():
    assert [tag_kind(t) for t in ("main", "v0.2-rc", "v1.0.0-rc.2", "v1.1-beta", "v0.1.0", "v1.0-ga",
                                  "ga-anchor", "nightly")] == [
        "main", "rc", "rc", "rc", "stable", "ga_anchor", "ga_anchor", "other"]
    tags = ["main", "v0.10", "v0.2", "v0.2-rc.2", "v0.2-rc", "v0.2-beta", "v1.0-ga", "ga-anchor", "v0.9.1"]
    assert sorted(tags, key=semver_key) == [
        "v0.2-beta", "v0.2-rc", "v0.2-rc.2", "v0.2", "v0.9.1", "v0.10", "v1.0-ga", "ga-anchor", "main"]


@pytest.mark.parametrize("available, tags, kind", [
    # previous stable: the newest stable tag before the newest release candidate
    ({"main", "v0.2-rc", "v0.1.0", "v0.1.1", "v0.3.0"}, ["v0.1.1", "main", "v0.2-rc"], "previous_stable"),
    # no stable tag: the first GA anchor
    ({"main", "v0.2-rc", "ga-anchor", "v0.1-ga"}, ["v0.1-ga", "main", "v0.2-rc"], "ga_anchor"),
    # a stable tag only after the candidate does not count: GA anchor
    ({"main", "v0.2-rc", "v0.2.0", "ga-anchor"}, ["ga-anchor", "main", "v0.2-rc"], "ga_anchor"),
    # neither: main is the reference
    ({"main", "v0.2-rc"}, ["main", "v0.2-rc"], "no_baseline"),
    # no candidate: main against the newest stable tag
    ({"main", "v0.1.0", "v0.1.2"}, ["v0.1.2", "main"], "previous_stable"),
])
def test_baseline_rule(available, tags, kind):
    choice = baseline_rule(available)
    assert (choice.tags, choice.reference, choice.kind) == (tags, tags[0], kind)


def test_baseline_rule_needs_two_tags():
    with pytest.raises(Exception, match="the baseline rule found fewer than two tags to compare among: main"):
        baseline_rule({"main"})


def _git(repo: Path, *args: str, date: str | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    if date:
        env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"] = date
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def test_git_tag_order_decides_which_stable_tag_is_previous(tmp_path):
    # semver puts v0.9.0 after v0.2-rc; in this repository it was tagged before it
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    for tag, date in (("v0.1.0", "2026-01-01T00:00:00Z"), ("v0.9.0", "2026-02-01T00:00:00Z"),
                      ("v0.2-rc", "2026-03-01T00:00:00Z")):
        _git(repo, "commit", "-q", "--allow-empty", "-m", tag, date=date)
        _git(repo, "tag", "-a", tag, "-m", tag, date=date)
    available = {"main", "v0.1.0", "v0.9.0", "v0.2-rc", "local-build"}
    assert baseline_rule(available).reference == "v0.1.0"
    choice = baseline_rule(available, repo)
    assert choice.reference == "v0.9.0"
    assert choice.rule == (f"baseline rule: previous stable tag v0.9.0 before v0.2-rc, ordered by git tag "
                           f"--sort=creatordate in {repo}; not git tags, after them in semver-ish order: local-build")
    assert order_tags(["v0.2-rc", "v0.9.0", "v0.1.0"], repo)[0] == ["v0.1.0", "v0.9.0", "v0.2-rc"]


def test_repo_that_is_not_git(tmp_path, no_scoring, sloan):
    make_tag(tmp_path / "runs", "main", 2)
    make_tag(tmp_path / "runs", "v0.2-rc", 2)
    (tmp_path / "plain").mkdir()
    r = sloan("compare", "--runs", tmp_path / "runs", "--repo", tmp_path / "plain")
    assert r.exit_code == 2
    assert r.output.splitlines()[0].startswith(f"error: cannot list the git tags of {tmp_path / 'plain'}: fatal:")


def test_generated_fixture_is_what_the_docstring_says(tmp_path):
    # 40 requests at 0.5x + i/40: the p95 (linear interpolation) is 0.5 + 37.05 / 40 = 1.42625x the level
    run = make_run(tmp_path, "main", "x", ttft=500)
    ttft = pq.read_table(run / "requests").column("ttft_ms").to_numpy()
    assert np.quantile(ttft, 0.95) == pytest.approx(713.125)
