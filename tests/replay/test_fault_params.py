"""Fault parameters a user sets (--fault, config lab.faults), checked before any lab starts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from capture.cli import main as slocap
from replay.faults import SCENARIOS, build, check_fault_params, params_for
from replay.runner import LabOptions
from runfmt.config import load_config
from runfmt.errors import ConfigError


def test_parameters_are_checked_against_their_scenario():
    assert check_fault_params({"dns_latency": {"ms": 120}, "tcp_loss": {"every": 10}}) == {
        "dns_latency": {"ms": 120}, "tcp_loss": {"every": 10}}
    for given, says in [
        ({"dns_latency": {"ms": -1}}, "fault parameter dns_latency.ms=-1 is out of range: 0 to 60000"),
        ({"dns_latency": {"delay": 1}}, "scenario 'dns_latency' has no parameter 'delay'"),
        ({"tcp_loss": {"every": 2.5}}, "fault parameter tcp_loss.every=2.5 is not an integer"),
        ({"provider_throttle": {"fraction": "half"}}, "fault parameter provider_throttle.fraction='half' is not a number"),
        ({"cpu_contention": {"service": "db"}}, "fault parameter cpu_contention.service='db' is not one of dns"),
        ({"baseline": {"x": 1}}, "fault parameters for 'baseline', which is not a fault scenario"),
        ({"connect_stall": {"every": 4, "drop": 5}}, "fault parameters of connect_stall: drop=5 is more than every=4"),
    ]:
        with pytest.raises(ConfigError) as err:
            check_fault_params(given)
        assert err.value.message.startswith(says), err.value.message


def test_a_mixed_scenario_takes_each_parts_parameters():
    params = {"dns_latency": {"ms": 50}, "tcp_loss": {"every": 3}}
    assert params_for("dns_latency+cpu_contention", params) == {"dns_latency": {"ms": 50}}
    assert params_for("tcp_loss", params) == {"every": 3}
    assert params_for("retrieval_slowdown", params) == {}


def test_config_and_command_line_merge_the_command_line_winning(tmp_path):
    cfg = load_config()
    cfg["lab"]["faults"] = {"dns_latency": {"ms": 100}, "tls_slowdown": {"ms": 50}}
    opts = LabOptions(scenarios=["dns_latency"], reps=1, tag="t", profile="smoke", runs_root=tmp_path,
                      config=cfg, fault_params={"dns_latency": {"ms": 150}})
    assert opts.fault_params == {"dns_latency": {"ms": 150}, "tls_slowdown": {"ms": 50}}


def test_a_fault_labels_the_intensity_it_was_built_with():
    # admin_url given: the fault is built without a lab (nothing is injected here)
    fault = build("dns_latency", None, {"ms": 120, "admin_url": "http://127.0.0.1:1/admin/fault"})
    assert fault.label() == {"domain": "network_dns", "target": "dns", "intensity": json.dumps({"ms": 120})}
    default = SCENARIOS["retrieval_slowdown"](None, {"admin_url": "http://127.0.0.1:1/admin/fault"})
    assert json.loads(default.label()["intensity"]) == {"extra_ms": 1000}


def test_the_command_line_rejects_a_bad_fault_before_any_lab(tmp_path):
    run = CliRunner().invoke(slocap, ["lab", "run", "--scenario", "dns_latency", "--tag", "t", "--out",
                                      str(tmp_path), "--fault", "dns_latency.ms=99999"])
    assert run.exit_code == 1
    assert run.output.splitlines() == ["error: fault parameter dns_latency.ms=99999 is out of range: 0 to 60000",
                                       "  pass e.g. --fault dns_latency.ms=900"]
    run = CliRunner().invoke(slocap, ["lab", "run", "--scenario", "dns_latency", "--tag", "t", "--out",
                                      str(tmp_path), "--fault", "ms=1"])
    assert run.exit_code == 2 and "write SCENARIO.PARAM=VALUE" in run.output
    assert not any(tmp_path.iterdir())
