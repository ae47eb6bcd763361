import json

import jsonschema
import pytest

from runfmt.config import CONFIG_DIR, config_hash, load_config
from runfmt.errors import ConfigError


@pytest.fixture
def write(tmp_path):
    def write(content):
        path = tmp_path / "user.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


def test_schema_is_valid_and_defaults_validate():
    schema = json.loads((CONFIG_DIR / "toolkit.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = json.loads((CONFIG_DIR / "defaults.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(defaults)
    assert load_config() == defaults


def test_defaults_match_the_schema_defaults():
    schema = json.loads((CONFIG_DIR / "toolkit.schema.json").read_text())
    defaults = load_config()
    for section, spec in schema["properties"].items():
        for key, field in spec["properties"].items():
            assert defaults[section][key] == field["default"], f"{section}.{key}"


def test_partial_user_file_merges_over_defaults(write):
    cfg = load_config(write({"sampling": {"burst_limit": 50}, "slo": {"ttft_ms": {"breach": 800}}}))
    assert cfg["sampling"] == {"events_per_second_limit": 0, "burst_limit": 50}
    assert cfg["slo"]["ttft_ms"] == {"warning": 500, "breach": 800, "page": True}
    assert cfg["capture"]["ring_buffer_bytes"] == 4 * 1024 * 1024


def test_user_list_replaces_default_list(write):
    cfg = load_config(write({"signal_set": {"enabled": ["tls"]}}))
    assert cfg["signal_set"] == {"enabled": ["tls"], "mode": "auto"}


def test_load_config_accepts_str_path(write):
    assert load_config(str(write({})))["correlation"]["window_ms"] == 500


@pytest.mark.parametrize(
    "user, path, words",
    [
        ({"sampling": {"events_per_second_limit": -1}}, "$.sampling.events_per_second_limit", "-1 is less than the minimum of 0"),
        ({"sampling": {"burst_limit": 0}}, "$.sampling.burst_limit", "0 is less than the minimum of 1"),
        ({"signal_set": {"enabled": ["dns", "ftrace"]}}, "$.signal_set.enabled[1]", "'ftrace' is not one of"),
        ({"signal_set": {"enabled": ["dns", "dns"]}}, "$.signal_set.enabled", "non-unique"),
        ({"signal_set": {"mode": "ebpf"}}, "$.signal_set.mode", "'ebpf' is not one of"),
        ({"capture": {"ring_buffer_bytes": 1024}}, "$.capture.ring_buffer_bytes", "1024 is less than the minimum of 65536"),
        ({"capture": {"wakeup_fill_pct": 95}}, "$.capture.wakeup_fill_pct", "95 is greater than the maximum of 90"),
        ({"capture": {"poll_timeout_ms": 5}}, "$.capture.poll_timeout_ms", "5 is less than the minimum of 10"),
        ({"capture": {"part_max_seconds": 0}}, "$.capture.part_max_seconds", "0 is less than or equal to the minimum of 0"),
        ({"capture": {"part_max_rows": "many"}}, "$.capture.part_max_rows", "'many' is not of type 'integer'"),
        ({"correlation": {"window_ms": 60001}}, "$.correlation.window_ms", "60001 is greater than the maximum of 60000"),
        ({"otlp": {"endpoint": "http://collector"}}, "$.otlp.endpoint", "'http://collector' does not match"),
        ({"safety": {"max_overhead_pct": 0}}, "$.safety.max_overhead_pct", "0 is less than or equal to the minimum of 0"),
        ({"slo": {"error_rate": {"breach": 2}}}, "$.slo.error_rate.breach", "2 is greater than the maximum of 1"),
        ({"slo": {"ttft_ms": {"warning": "fast"}}}, "$.slo.ttft_ms.warning", "'fast' is not of type 'number'"),
        ({"gate": {"min_recall": 1.5}}, "$.gate.min_recall", "1.5 is greater than the maximum of 1"),
        ({"sampling": {"burst_limit": True}}, "$.sampling.burst_limit", "True is not of type 'integer'"),
        ({"sampling": 5}, "$.sampling", "5 is not of type 'object'"),
    ],
)
def test_bad_field_names_its_json_path(write, user, path, words):
    source = write(user)
    with pytest.raises(ConfigError) as info:
        load_config(source)
    assert info.value.message.startswith(f"config {source}: {path}: ")
    assert words in info.value.message
    assert info.value.hint == "fix that field, or see config/toolkit.schema.json for what is allowed"


def test_example_message_reads_exactly(write):
    source = write({"sampling": {"events_per_second_limit": -1}})
    with pytest.raises(ConfigError) as info:
        load_config(source)
    assert info.value.message == f"config {source}: $.sampling.events_per_second_limit: -1 is less than the minimum of 0"


def test_unknown_top_level_key_is_rejected(write):
    with pytest.raises(ConfigError, match=r"\$: Additional properties are not allowed \('sampleing' was unexpected\)"):
        load_config(write({"sampleing": {"burst_limit": 5}}))


def test_unknown_nested_key_is_rejected(write):
    with pytest.raises(ConfigError, match=r"\$\.capture: Additional properties are not allowed \('ring_bytes'"):
        load_config(write({"capture": {"ring_bytes": 65536}}))


@pytest.mark.parametrize("ring", [65536, 131072, 4194304, 268435456])
def test_power_of_two_ring_sizes_are_accepted(write, ring):
    assert load_config(write({"capture": {"ring_buffer_bytes": ring}}))["capture"]["ring_buffer_bytes"] == ring


def test_ring_buffer_not_a_power_of_two_is_rejected(write):
    source = write({"capture": {"ring_buffer_bytes": 5_000_000}})
    with pytest.raises(ConfigError) as info:
        load_config(source)
    assert info.value.message == f"config {source}: $.capture.ring_buffer_bytes: 5000000 is not a power of two"
    assert info.value.hint == "the kernel needs a power of two: use 4194304 or 8388608"


def test_swapped_thresholds_are_rejected(write):
    with pytest.raises(ConfigError, match=r"\$\.slo\.ttft_ms: warning 2000 is above breach 1000"):
        load_config(write({"slo": {"ttft_ms": {"warning": 2000}}}))
    with pytest.raises(ConfigError, match=r"\$\.slo\.tokens_per_second: warning 5 is below breach 10"):
        load_config(write({"slo": {"tokens_per_second": {"warning": 5}}}))


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.message == f"config {missing}: file not found"


def test_invalid_json_gives_line_and_column(write):
    source = write('{\n  "sampling": {"burst_limit": 5,}\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(source)
    assert info.value.message == (
        f"config {source}: invalid JSON at line 2, column 33: Expecting property name enclosed in double quotes"
    )


def test_nan_is_rejected(write):
    with pytest.raises(ConfigError, match="NaN is not allowed"):
        load_config(write('{"safety": {"max_overhead_pct": NaN}}'))


def test_top_level_must_be_an_object(write):
    with pytest.raises(ConfigError, match=r"\$: the top level must be an object, not list"):
        load_config(write("[]"))


def test_config_hash_is_stable_under_key_order():
    cfg = load_config()
    reordered = json.loads(json.dumps({k: dict(reversed(v.items())) for k, v in reversed(cfg.items())}))
    assert list(reordered) != list(cfg)
    assert config_hash(reordered) == config_hash(cfg)
    assert len(config_hash(cfg)) == 16
    assert all(c in "0123456789abcdef" for c in config_hash(cfg))


def test_config_hash_changes_with_a_value():
    cfg = load_config()
    changed = load_config()
    changed["correlation"]["window_ms"] = 501
    assert config_hash(changed) != config_hash(cfg)
