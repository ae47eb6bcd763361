"""The severity sweep's plan, and how it resumes from the runs already recorded."""

from __future__ import annotations

import json

from replay.faults import MIXED, SCENARIOS
from replay.sweep import BASELINE_FACTOR, SETTINGS, Step, missing, plan
from tests.support.runs import write_run


def test_every_fault_has_three_settings_within_its_parameters():
    from replay.faults import check_fault_params

    assert set(SETTINGS) == set(SCENARIOS)
    for scenario, settings in SETTINGS.items():
        assert len(settings) == 3
        for params in settings:
            check_fault_params({scenario: params})  # raises on an unknown parameter or a value out of range
    steps = plan(7)
    assert steps[0].scenario == "baseline" and steps[0].reps == 7 * BASELINE_FACTOR
    assert {s.scenario for s in steps if s.params is None} == {"baseline", *MIXED}


def test_a_setting_with_enough_complete_runs_is_skipped(tmp_path):
    step = Step("dns_latency", {"ms": 900}, 2)
    label = {"run_id": "x", "scenario": "dns_latency", "domain": "network_dns", "target": "dns",
             "intensity": step.intensity, "start_ns": 1, "end_ns": 2}
    write_run(tmp_path, "a", manifest={"complete": True}, labels=[{**label, "run_id": "a"}])
    write_run(tmp_path, "b", manifest={"complete": False}, labels=[{**label, "run_id": "b"}])  # cut: not counted
    other = {**label, "run_id": "c", "intensity": json.dumps({"ms": 100})}
    write_run(tmp_path, "c", manifest={"complete": True}, labels=[other])
    assert missing(step, tmp_path, "main") == 1
    write_run(tmp_path, "d", manifest={"complete": True}, labels=[{**label, "run_id": "d"}])
    assert missing(step, tmp_path, "main") == 0
    assert missing(Step("dns_latency", {"ms": 100}, 2), tmp_path, "main") == 1
