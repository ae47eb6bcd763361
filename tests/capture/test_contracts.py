import copy
import importlib.util
import json
import string

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runfmt.contracts import (
    CONTRACTS,
    CONTRACTS_DIR,
    load_contract,
    probe_event_from_row,
    validate,
)
from runfmt.errors import DataError

SLO_EVENT = {
    "event_id": "ev-1",
    "timestamp": "2025-03-01T12:00:00.250Z",
    "cluster": "prod-eu",
    "namespace": "llm",
    "workload": "vllm-gateway",
    "service": "chat",
    "request_id": "req-42",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "sli_name": "ttft_ms",
    "sli_value": 1234.5,
    "unit": "ms",
    "status": "breach",
    "labels": {"model": "llama-3-8b"},
}

INCIDENT = {
    "incident_id": "inc-7",
    "timestamp": "2025-03-01T12:05:00+01:00",
    "cluster": "prod-eu",
    "namespace": "llm",
    "service": "chat",
    "predicted_fault_domain": "network_dns",
    "confidence": 0.82,
    "evidence": [
        {"signal": "dns_latency_p95_ms", "value": 412.0, "source": "ebpf"},
        {"signal": "resolver", "value": "10.96.0.10", "source": "kubernetes"},
        {"signal": "retry_storm", "value": False, "source": "application"},
    ],
    "slo_impact": {"sli": "ttft_ms", "burn_rate": 14.4, "window_minutes": 5},
    "trace_ids": ["4bf92f3577b34da6a3ce929d0e0e4736"],
    "request_ids": ["req-42"],
    "fault_hypotheses": [
        {"domain": "network_dns", "posterior": 0.82, "evidence": ["dns_latency_p95_ms"]},
        {"domain": "cpu_throttle", "posterior": 0.1},
    ],
}

PROBE_EVENT = {
    "ts_unix_nano": 1740830400250000000,
    "signal": "connect",
    "node": "node-a",
    "namespace": "llm",
    "pod": "vllm-0",
    "container": "server",
    "pid": 4242,
    "tid": 4243,
    "value": 3.2,
    "unit": "ms",
    "status": "error",
    "conn_tuple": {"src_ip": "10.0.0.5", "dst_ip": "10.0.0.9", "src_port": 40000, "dst_port": 443, "protocol": "tcp"},
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
    "errno": -111,
    "confidence": 1.0,
}

EXAMPLES = {"v1/slo-event": SLO_EVENT, "v1/incident-attribution": INCIDENT, "v1alpha1/probe-event": PROBE_EVENT}

HAVE_RFC3339 = importlib.util.find_spec("rfc3339_validator") is not None


@pytest.mark.parametrize("name", CONTRACTS)
def test_contract_is_a_valid_2020_12_schema(name):
    schema = load_contract(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    assert schema == json.loads((CONTRACTS_DIR / f"{name}.schema.json").read_text())


def test_load_contract_returns_a_copy():
    load_contract("v1/slo-event")["required"].clear()
    assert "event_id" in load_contract("v1/slo-event")["required"]


def test_unknown_contract_lists_the_known_ones():
    with pytest.raises(DataError) as info:
        load_contract("../../config/defaults")
    assert info.value.message == "unknown contract '../../config/defaults'"
    assert info.value.hint == "known contracts: v1/incident-attribution, v1/slo-event, v1alpha1/probe-event"
    with pytest.raises(DataError, match="unknown contract 'v2/slo-event'"):
        validate("v2/slo-event", SLO_EVENT)


@pytest.mark.parametrize("name", CONTRACTS)
def test_valid_example_is_accepted(name):
    validate(name, EXAMPLES[name])


@pytest.mark.parametrize(
    "name, missing", [("v1/slo-event", "sli_value"), ("v1/incident-attribution", "slo_impact"), ("v1alpha1/probe-event", "tid")]
)
def test_missing_required_field_is_rejected(name, missing):
    doc = copy.deepcopy(EXAMPLES[name])
    del doc[missing]
    with pytest.raises(DataError) as info:
        validate(name, doc)
    assert info.value.message == f"{name}: $: '{missing}' is a required property"
    assert info.value.hint == f"see docs/contracts/{name}.schema.json for what is allowed"


@pytest.mark.parametrize("name", CONTRACTS)
def test_extra_property_is_rejected(name):
    doc = {**EXAMPLES[name], "severity": "high"}
    with pytest.raises(DataError, match=r": \$: Additional properties are not allowed \('severity' was unexpected\)"):
        validate(name, doc)


@pytest.mark.parametrize(
    "name, path, value",
    [
        ("v1/slo-event", ["sli_name"], "goodput_rps"),
        ("v1/slo-event", ["status"], "error"),
        ("v1/incident-attribution", ["predicted_fault_domain"], "gpu"),
        ("v1/incident-attribution", ["evidence", 1, "source"], "ebpf-probe"),
        ("v1/incident-attribution", ["fault_hypotheses", 0, "domain"], "disk"),
        ("v1alpha1/probe-event", ["status"], "breach"),
    ],
)
def test_out_of_enum_value_is_rejected(name, path, value):
    doc = copy.deepcopy(EXAMPLES[name])
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    json_path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    with pytest.raises(DataError) as info:
        validate(name, doc)
    assert info.value.message.startswith(f"{name}: {json_path}: '{value}' is not one of [")


@pytest.mark.parametrize(
    "name, path, value, words",
    [
        ("v1/incident-attribution", ["confidence"], 1.2, "1.2 is greater than the maximum of 1"),
        ("v1/incident-attribution", ["slo_impact", "window_minutes"], 0, "0 is less than the minimum of 1"),
        ("v1/incident-attribution", ["evidence", 0, "value"], None, "None is not of type 'string', 'number', 'boolean'"),
        ("v1/slo-event", ["labels", "model"], 8, "8 is not of type 'string'"),
        ("v1alpha1/probe-event", ["conn_tuple", "dst_port"], 65536, "65536 is greater than the maximum of 65535"),
        ("v1alpha1/probe-event", ["pid"], -1, "-1 is less than the minimum of 0"),
    ],
)
def test_out_of_range_value_names_its_path(name, path, value, words):
    doc = copy.deepcopy(EXAMPLES[name])
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    json_path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    with pytest.raises(DataError) as info:
        validate(name, doc)
    assert info.value.message == f"{name}: {json_path}: {words}"


# jsonschema checks "date-time" only when rfc3339-validator is installed; it is not a
# dependency, so until it is this documents the gap (xfail_strict flags the day it closes).
@pytest.mark.xfail(not HAVE_RFC3339, reason="date-time is unchecked without rfc3339-validator", strict=True)
@pytest.mark.parametrize("name", ["v1/slo-event", "v1/incident-attribution"])
def test_invalid_timestamp_is_rejected(name):
    with pytest.raises(DataError, match=r"\$\.timestamp: 'yesterday' is not a 'date-time'"):
        validate(name, {**EXAMPLES[name], "timestamp": "yesterday"})


def test_timestamp_must_be_a_string():
    with pytest.raises(DataError, match=r"\$\.timestamp: 1740830400 is not of type 'string'"):
        validate("v1/slo-event", {**SLO_EVENT, "timestamp": 1740830400})


ROW = {
    "ts_ns": 1740830400250000000,
    "signal": "dns",
    "pid": 4242,
    "tid": 4243,
    "comm": "python3",
    "cgroup_id": 8812,
    "pod": "vllm-0",
    "namespace": "llm",
    "container": "server",
    "node": "node-a",
    "saddr": None,
    "daddr": None,
    "sport": None,
    "dport": None,
    "family": None,
    "value_ns": 12_500_000,
    "detail": "api.openai.com",
    "errno": 0,
    "trace_id": None,
    "span_id": None,
}


def test_dns_row():
    event = probe_event_from_row(ROW)
    validate("v1alpha1/probe-event", event)
    assert event == {
        "ts_unix_nano": 1740830400250000000,
        "signal": "dns",
        "node": "node-a",
        "namespace": "llm",
        "pod": "vllm-0",
        "container": "server",
        "pid": 4242,
        "tid": 4243,
        "value": 12.5,
        "unit": "ms",
        "status": "ok",
        "errno": 0,
    }


def test_failed_dns_lookup_is_an_error():
    event = probe_event_from_row({**ROW, "errno": -2, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"})
    validate("v1alpha1/probe-event", event)
    assert (event["status"], event["errno"]) == ("error", -2)
    assert (event["trace_id"], event["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


@pytest.mark.parametrize(
    "family, saddr, daddr", [(2, "10.0.0.5", "10.0.0.9"), (10, "fd00::5", "2001:db8::9")]
)
def test_retransmit_row(family, saddr, daddr):
    row = {
        **ROW,
        "signal": "retransmit",
        "family": family,
        "saddr": saddr,
        "daddr": daddr,
        "sport": 40000,
        "dport": 443,
        "value_ns": None,
        "detail": None,
        "errno": None,
        "pod": None,
        "namespace": None,
        "container": None,
    }
    event = probe_event_from_row(row)
    validate("v1alpha1/probe-event", event)
    assert (event["value"], event["unit"], event["status"]) == (1, "count", "warning")
    assert event["conn_tuple"] == {"src_ip": saddr, "dst_ip": daddr, "src_port": 40000, "dst_port": 443, "protocol": "tcp"}
    assert (event["pod"], event["namespace"], event["container"]) == ("", "", "")
    assert "errno" not in event


def test_connect_failure_row():
    row = {
        **ROW,
        "signal": "connect",
        "family": 2,
        "saddr": "10.0.0.5",
        "daddr": "10.0.0.9",
        "sport": 0,
        "dport": 8080,
        "value_ns": 3_000_000,
        "detail": None,
        "errno": -111,
    }
    event = probe_event_from_row(row)
    validate("v1alpha1/probe-event", event)
    assert (event["value"], event["unit"], event["status"], event["errno"]) == (3.0, "ms", "error", -111)
    assert event["conn_tuple"]["src_port"] == 0


def test_conn_tuple_needs_both_addresses():
    event = probe_event_from_row({**ROW, "saddr": "10.0.0.5", "sport": 40000})
    assert "conn_tuple" not in event


@pytest.mark.parametrize("key", ["pid", "tid", "ts_ns"])
def test_negative_ids_are_a_data_error(key):
    with pytest.raises(DataError) as info:
        probe_event_from_row({**ROW, key: -1})
    assert info.value.message == f"kernel_events row: {key} -1 is not a non-negative integer"


def test_row_without_a_required_key_is_a_data_error():
    row = dict(ROW)
    del row["node"]
    with pytest.raises(DataError, match="kernel_events row lacks 'node'"):
        probe_event_from_row(row)


def test_numpy_integers_become_python_ints():
    np = pytest.importorskip("numpy")
    event = probe_event_from_row({**ROW, "pid": np.uint32(7), "tid": np.int64(8), "ts_ns": np.int64(9)})
    validate("v1alpha1/probe-event", event)
    assert (type(event["pid"]), type(event["tid"]), type(event["ts_unix_nano"])) == (int, int, int)


def _maybe(strategy):
    return st.none() | strategy


HEX = string.hexdigits.lower()[:16]

rows = st.fixed_dictionaries(
    {
        "ts_ns": st.integers(0, 2**63 - 1),
        "signal": st.sampled_from(["dns", "retransmit", "connect", "runqueue", "cpu_steal", "tls", "mem_reclaim"]),
        "pid": st.integers(0, 2**32 - 1),
        "tid": st.integers(0, 2**32 - 1),
        "comm": st.text(max_size=16),
        "cgroup_id": st.integers(0, 2**64 - 1),
        "pod": _maybe(st.text()),
        "namespace": _maybe(st.text()),
        "container": _maybe(st.text()),
        "node": st.text(min_size=1),
        "saddr": _maybe(st.ip_addresses().map(str)),
        "daddr": _maybe(st.ip_addresses().map(str)),
        "sport": _maybe(st.integers(0, 65535)),
        "dport": _maybe(st.integers(0, 65535)),
        "family": _maybe(st.sampled_from([2, 10])),
        "value_ns": _maybe(st.integers(0, 2**64 - 1)),
        "detail": _maybe(st.text()),
        "errno": _maybe(st.integers(-(2**31), 2**31 - 1)),
        "trace_id": _maybe(st.text(HEX, min_size=32, max_size=32)),
        "span_id": _maybe(st.text(HEX, min_size=16, max_size=16)),
    }
)


@settings(database=None)
@given(rows)
def test_any_reasonable_row_converts_to_a_valid_probe_event(row):
    event = probe_event_from_row(row)
    validate("v1alpha1/probe-event", event)
    assert event["ts_unix_nano"] == row["ts_ns"]
    assert event["unit"] == ("count" if row["value_ns"] is None else "ms")
    assert ("conn_tuple" in event) == (row["saddr"] is not None and row["daddr"] is not None)
    if row["errno"]:
        assert event["status"] == "error"
