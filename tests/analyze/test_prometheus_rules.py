"""sloan rules prometheus: the rules file, checked by `promtool check rules` and unit-tested by
`promtool test rules` on synthetic series that must fire and must not fire."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from analyze.prometheus import TIERS, nearest_boundary, prometheus_rules
from runfmt.config import load_config

PROMTOOL_MISSING = "promtool not found: `make setup` installs it (Debian package prometheus)"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):  # a skip would hide a set-up step that stopped installing it
            pytest.fail(PROMTOOL_MISSING)
        pytest.skip(PROMTOOL_MISSING)
    return path


def _run(promtool: str, *args) -> str:
    done = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _rules_file(sloan, tmp_path, *args):
    path = tmp_path / "rules.yml"
    r = sloan("rules", "prometheus", "-o", path, *args)
    assert r.exit_code == 0, r.output
    return path


# --- the file -----------------------------------------------------------------------------


def test_defaults_page_on_ttft_tpot_and_errors_and_record_the_rest(sloan):
    r = sloan("rules", "prometheus")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("# Prometheus rules for the LLM SLOs: sloan rules prometheus --metrics vllm\n")
    # TPOT's 27 ms breach is no vLLM bucket boundary: the nearest, 25 ms, is used and said so
    assert r.stderr == ("warning: slo.tpot_ms.breach 27 ms is not a bucket boundary of "
                        "vllm:request_time_per_output_token_seconds; using le=\"0.025\" (25 ms), the nearest: "
                        "requests between 25 ms and 27 ms count as bad\n")
    assert "# warning: slo.tpot_ms.breach 27 ms" in r.stdout
    rules = prometheus_rules(load_config())
    assert rules.alerts == [f"{s}ErrorBudget{t}" for s in ("TTFT", "TPOT", "Errors")
                            for t in ("FastBurn", "SlowBurn", "Ticket")]
    assert rules.records == 4 * 5  # E2E latency recorded too; tokens/s has no source
    e2e = next(g for g in rules.groups if g["name"] == "sloan-slo-request_latency_ms")
    assert all("record" in rule for rule in e2e["rules"])
    assert "token_throughput_tps: not covered" in rules.to_yaml()


def test_a_paging_informational_sli_gets_alerts_and_the_budget_is_used(sloan, tmp_path):
    cfg = tmp_path / "slo.json"
    cfg.write_text(json.dumps({"slo": {"request_latency_ms": {"page": True}, "tpot_ms": {"breach": 50}}}))
    r = sloan("rules", "prometheus", "--config", cfg, "--budget", "0.01")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""  # 50 ms is a boundary
    assert "alert: E2ELatencyErrorBudgetFastBurn" in r.stdout
    assert 'sloan:bad_requests:ratio_rate1h{sli="request_latency_ms"} >= (14.4 * 0.01)' in r.stdout
    assert 'vllm:e2e_request_latency_seconds_bucket{le="1.5"}[5m]' in r.stdout
    assert "Error budget 1% of requests per SLI (objective 99% good)." in r.stdout


@pytest.mark.parametrize("breach_ms, le, note", [
    (1000, 1.0, None),
    (800, 0.75, "requests between 750 ms and 800 ms count as bad"),
    (900, 1.0, "requests between 900 ms and 1 s count as good"),
    (625, 0.5, "requests between 500 ms and 625 ms count as bad"),  # a tie: the lower
    (9_000_000, 2560.0, "requests between 2560 s and 9000 s count as bad"),  # above every boundary
])
def test_a_breach_off_the_boundaries_takes_the_nearest(breach_ms, le, note):
    cfg = load_config()
    cfg["slo"]["ttft_ms"]["breach"] = breach_ms
    rules = prometheus_rules(cfg)
    assert rules.slis[0].sli == "ttft_ms" and rules.slis[0].threshold_s == le
    ttft = [w for w in rules.warnings if w.startswith("slo.ttft_ms")]
    assert len(ttft) == (note is not None)
    assert note is None or ttft[0].endswith(note)


def test_nearest_boundary():
    assert nearest_boundary(0.027, (0.01, 0.025, 0.05)) == (0.025, False)
    assert nearest_boundary(1.0, (0.5, 1, 2.5)) == (1, True)
    assert nearest_boundary(0.0001, (0.001, 0.005)) == (0.001, False)


def test_a_whole_boundary_matches_both_spellings_of_le(sloan):
    r = sloan("rules", "prometheus", "--metrics", "otel-genai")
    assert r.exit_code == 0, r.output
    # le="1.0" (Python's client, Prometheus 3) and le="1" (an OpenTelemetry Collector)
    assert 'gen_ai_server_time_to_first_token_seconds_bucket{le=~"1(\\\\.0)?"}[5m]' in r.stdout
    assert 'gen_ai_server_request_duration_seconds_count{error_type!=""}[1h]' in r.stdout


def test_names_selector_and_grouping(sloan):
    r = sloan("rules", "prometheus", "--ttft-metric", "kserve_vllm:time_to_first_token_seconds",
              "--requests-metric", "http_requests_total", "--failed", 'status=~"5.."',
              "--selector", 'job="vllm", namespace!="test"', "--by", "model_name")
    assert r.exit_code == 0, r.output
    assert ('sum by (model_name) (rate(kserve_vllm:time_to_first_token_seconds_bucket{job="vllm", '
            'namespace!="test", le=~"1(\\\\.0)?"}[5m]))') in r.stdout
    assert 'sum by (model_name) (rate(http_requests_total{job="vllm", namespace!="test", status=~"5.."}[5m]))' \
        in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--selector", "{job='vllm'}"), "error: selector \"{job='vllm'}\" is not a list of label matchers"),
    (("--tpot-metric", "vllm:tpot-seconds"), "error: 'vllm:tpot-seconds' is not a Prometheus metric name"),
    (("--failed", "finished_reason"), "error: 'finished_reason' is not a label matcher"),
    (("--by", "le"), "error: 'le' cannot group the SLO"),
])
def test_bad_names_are_refused(sloan, args, message):
    r = sloan("rules", "prometheus", *args)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == message


@pytest.mark.parametrize("args", [
    (), ("--metrics", "otel-genai"), ("--by", "model_name,engine", "--selector", 'job="vllm"'),
])
def test_promtool_accepts_the_file(sloan, tmp_path, promtool, args):
    path = _rules_file(sloan, tmp_path, *args)
    assert "SUCCESS: 29 rules found" in _run(promtool, "check", "rules", path)


def test_promtool_accepts_every_sli_paging(sloan, tmp_path, promtool):
    cfg = tmp_path / "slo.json"
    cfg.write_text(json.dumps({"slo": {"request_latency_ms": {"page": True}, "tokens_per_second": {"page": True}}}))
    path = _rules_file(sloan, tmp_path, "--config", cfg)
    assert "SUCCESS: 32 rules found" in _run(promtool, "check", "rules", path)


# --- promtool test rules: synthetic traffic -----------------------------------------------
#
# 10,000 requests a minute; a phase is (minutes, share of bad requests). Every counter starts
# at 0 at t=0 and is sampled each minute, so a rate's extrapolation is the same for every
# series of a ratio and the recorded share is exactly bad / all requests in the window (clipped
# at t=0). Where an alert fires its $value (the long window's share) is checked too; the eval
# times are chosen so that this long window is either wholly in one phase or reaches back
# before t=0, where every Prometheus version counts the same samples.

PER_MINUTE = 10_000
HEALTHY = 0.0005  # 0.05 %: burn 0.025
BAD = 0.4  # 40 %: burn 20, above both page rates


@dataclass(frozen=True)
class Traffic:
    phases: tuple[tuple[int, float], ...]

    def bad_per_minute(self) -> list[int]:
        return [round(share * PER_MINUTE) for minutes, share in self.phases for _ in range(minutes)]

    def share(self, t: int, window: int) -> float:
        """Share of bad requests among those of the minutes (t - window, t], clipped at 0."""
        per = self.bad_per_minute()[max(0, t - window):t]
        return sum(per) / (len(per) * PER_MINUTE)


def _counter(per_minute: list[int]) -> str:
    """A counter rising by per_minute[k] in minute k + 1, in promtool's expanding notation."""
    parts, value, k = ["0"], 0, 0
    while k < len(per_minute):
        inc, n = per_minute[k], 1
        while k + n < len(per_minute) and per_minute[k + n] == inc:
            n += 1
        parts.append(f"{value + inc}+{inc}x{n - 1}")
        value, k = value + n * inc, k + n
    return " ".join(parts)


def _series(metrics: str, sli: str, traffic: Traffic, labels: str = "") -> dict[str, str]:
    """Input series: the engine's view of `traffic` for one SLI."""
    bad = traffic.bad_per_minute()
    good = [PER_MINUTE - b for b in bad]
    every = [PER_MINUTE] * len(bad)
    lab = f"{labels}, " if labels else ""
    if sli == "error_rate":
        if metrics == "vllm":
            half = [b // 2 for b in bad]
            return {f'vllm:request_success_total{{{lab}finished_reason="stop"}}': _counter(good),
                    f'vllm:request_success_total{{{lab}finished_reason="length"}}': _counter([0] * len(bad)),
                    f'vllm:request_success_total{{{lab}finished_reason="error"}}': _counter(half),
                    f'vllm:request_success_total{{{lab}finished_reason="abort"}}':
                        _counter([b - h for b, h in zip(bad, half)])}
        return {f'gen_ai_server_request_duration_seconds_count{{{lab}gen_ai_operation_name="chat"}}':
                _counter(good),
                f'gen_ai_server_request_duration_seconds_count{{{lab}gen_ai_operation_name="chat", error_type="500"}}':
                _counter(bad)}
    name, le, above = {
        ("vllm", "ttft_ms"): ("vllm:time_to_first_token_seconds", "1.0", "2.5"),
        ("vllm", "tpot_ms"): ("vllm:request_time_per_output_token_seconds", "0.025", "0.05"),
        ("otel-genai", "ttft_ms"): ("gen_ai_server_time_to_first_token_seconds", "1", "2.5"),
        ("otel-genai", "tpot_ms"): ("gen_ai_server_time_per_output_token_seconds", "0.025", "0.05"),
    }[metrics, sli]
    return {f'{name}_bucket{{{lab}le="0.001"}}': _counter([0] * len(bad)),
            f'{name}_bucket{{{lab}le="{le}"}}': _counter(good),
            f'{name}_bucket{{{lab}le="{above}"}}': _counter(every),  # every request: must not count as good
            f'{name}_bucket{{{lab}le="+Inf"}}': _counter(every),
            f"{name}_count{{{labels}}}" if labels else f"{name}_count": _counter(every)}


def _alert_tests(rules, sli: str, traffic: Traffic, evals: dict[int, set[str]],
                 labels: dict[str, str] | None = None) -> list[dict]:
    """alert_rule_test entries: at each eval minute, the tiers in evals fire and the others do not."""
    group = next(g for g in rules.groups if g["name"] == f"sloan-slo-{sli}")
    alerts = {r["labels"]["burn"]: r for r in group["rules"] if "alert" in r}
    long_window = {tier: int(lw[:-1]) * {"m": 1, "h": 60, "d": 1440}[lw[-1]] for tier, _, _, lw, _ in TIERS}
    out = []
    for t, firing in evals.items():
        for tier, rule in alerts.items():
            expected = []
            if tier in firing:
                value = _humanize_percentage(traffic.share(t, long_window[tier]))
                expected = [{"exp_labels": {**rule["labels"], "sli": sli, **(labels or {})},
                             "exp_annotations": {k: v.replace("{{ $value | humanizePercentage }}", value)
                                                 for k, v in rule["annotations"].items()}}]
            out.append({"eval_time": f"{t}m", "alertname": rule["alert"], "exp_alerts": expected})
    return out


def _humanize_percentage(share: float) -> str:
    """Prometheus' humanizePercentage for shares of 1 % to 100 %: four significant digits."""
    assert 0.01 <= share <= 1
    return f"{share * 100:.4g}%"


def _promtool_test(promtool, tmp_path, rules_path, tests: list[dict]) -> None:
    # JSON is YAML: promtool reads the test file as it is
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(json.dumps({"rule_files": [str(rules_path)], "evaluation_interval": "1m",
                                     "tests": tests}, indent=1))
    out = _run(promtool, "test", "rules", test_file)
    assert "SUCCESS" in out


HEALTHY_RUN = Traffic(((420, HEALTHY),))
# healthy for 4 h, then 40 % bad: a ticket after about 12 min, the fast page after about 43 min
# (40 % over the whole last hour from 60 min on), the slow page after about 102 min
STEP = Traffic(((240, HEALTHY), (120, BAD)))
STEP_EVALS = {239: set(), 250: set(), 260: {"ticket"}, 315: {"fast", "ticket"}, 350: {"fast", "slow", "ticket"}}
# 7 healthy hours, then every request bad for 5 minutes: the 5 m window sees it, no long one does
BLIP = Traffic(((420, HEALTHY), (5, 1.0), (15, HEALTHY)))
BLIP_EVALS = {423: set(), 426: set(), 440: set()}


@pytest.mark.parametrize("metrics", ["vllm", "otel-genai"])
@pytest.mark.parametrize("sli", ["ttft_ms", "tpot_ms", "error_rate"])
def test_paging_slis_fire_on_a_burn_and_stay_quiet_when_healthy(sloan, tmp_path, promtool, metrics, sli):
    rules_path = _rules_file(sloan, tmp_path, "--metrics", metrics)
    rules = prometheus_rules(load_config(), metrics)
    # the traffic never crosses the thresholds by a hair
    assert STEP.share(260, 3 * 1440) >= 1.5 * 0.02 and STEP.share(250, 3 * 1440) <= 0.85 * 0.02
    assert STEP.share(315, 360) <= 0.8 * 0.12 and STEP.share(350, 360) >= 1.05 * 0.12
    assert STEP.share(260, 60) <= 0.5 * 0.288
    assert BLIP.share(426, 60) <= 0.5 * 0.288 and BLIP.share(426, 3 * 1440) <= 0.75 * 0.02
    tests = [
        {"name": "healthy: 0.05 % bad never alerts", "interval": "1m",
         "input_series": [{"series": s, "values": v} for s, v in _series(metrics, sli, HEALTHY_RUN).items()],
         "alert_rule_test": _alert_tests(rules, sli, HEALTHY_RUN, {60: set(), 300: set(), 420: set()})},
        {"name": "a step to 40 % bad: ticket, then the fast page, then the slow page", "interval": "1m",
         "input_series": [{"series": s, "values": v} for s, v in _series(metrics, sli, STEP).items()],
         "alert_rule_test": _alert_tests(rules, sli, STEP, STEP_EVALS)},
        {"name": "5 minutes of every request bad after 7 healthy hours: no alert", "interval": "1m",
         "input_series": [{"series": s, "values": v} for s, v in _series(metrics, sli, BLIP).items()],
         "alert_rule_test": _alert_tests(rules, sli, BLIP, BLIP_EVALS)},
    ]
    _promtool_test(promtool, tmp_path, rules_path, tests)


def test_each_model_is_an_slo_of_its_own_with_by(sloan, tmp_path, promtool):
    rules_path = _rules_file(sloan, tmp_path, "--by", "model_name")
    rules = prometheus_rules(load_config(), by=["model_name"])
    series = {**_series("vllm", "ttft_ms", STEP, 'model_name="slow"'),
              **_series("vllm", "ttft_ms", HEALTHY_RUN, 'model_name="fine"')}
    tests = [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series.items()],
              "alert_rule_test": _alert_tests(rules, "ttft_ms", STEP, STEP_EVALS, {"model_name": "slow"})}]
    _promtool_test(promtool, tmp_path, rules_path, tests)


def test_an_informational_sli_is_recorded_but_never_alerts(sloan, tmp_path, promtool):
    rules_path = _rules_file(sloan, tmp_path)
    series = {'vllm:e2e_request_latency_seconds_bucket{le="1.5"}': _counter([6000] * 120),
              "vllm:e2e_request_latency_seconds_count": _counter([PER_MINUTE] * 120)}
    tests = [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series.items()],
              "promql_expr_test": [{"expr": 'round(sloan:bad_requests:ratio_rate1h{sli="request_latency_ms"}, 0.0001)',
                                    "eval_time": "90m",
                                    "exp_samples": [{"labels": '{sli="request_latency_ms"}', "value": 0.4}]}],
              "alert_rule_test": [{"eval_time": "90m", "alertname": "E2ELatencyErrorBudgetFastBurn"}]}]
    _promtool_test(promtool, tmp_path, rules_path, tests)
