"""Versioned data contracts in docs/contracts/, and the probe-event view of a recorded row."""

from __future__ import annotations

import copy
import functools
import json
import numbers
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from runfmt import CONTRACTS_DIR
from runfmt.errors import DataError

# Names double as paths under CONTRACTS_DIR, so only these may be opened.
CONTRACTS = ("v1/incident-attribution", "v1/slo-event", "v1alpha1/probe-event")

_ROW_HINT = "the recorder wrote a malformed kernel_events row; re-record the run"


def load_contract(name: str) -> dict[str, Any]:
    """The JSON Schema of contract `name`, e.g. "v1/slo-event"."""
    return copy.deepcopy(_schema(name))


def fault_domains() -> tuple[str, ...]:
    """The v1 fault domains, in the contract's order; "unknown" (an abstention) last."""
    return tuple(_schema("v1/incident-attribution")["$defs"]["fault_domain"]["enum"])


def validate(name: str, document: Mapping[str, Any]) -> None:
    """Raise DataError naming the JSON path of the first way `document` breaks contract `name`."""
    error = best_match(_validator(name).iter_errors(document))
    if error is not None:
        raise DataError(
            f"{name}: {error.json_path}: {error.message}",
            hint=f"see docs/contracts/{name}.schema.json for what is allowed",
        )


def probe_event_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one kernel_events row to a v1alpha1 probe-event."""
    try:
        signal, node = row["signal"], row["node"]
        ts_ns = _count(row, "ts_ns")
        # no task (a retransmit in softirq context): the contract's kernel convention is 0
        pid = 0 if row["pid"] is None else _count(row, "pid")
        tid = 0 if row["tid"] is None else _count(row, "tid")
    except KeyError as exc:
        raise DataError(f"kernel_events row lacks {exc.args[0]!r}", hint=_ROW_HINT) from None

    value_ns = row.get("value_ns")
    errno = row.get("errno")
    event: dict[str, Any] = {
        "ts_unix_nano": ts_ns,
        "signal": signal,
        "node": node,
        # Host processes have no pod; the contract wants strings.
        "namespace": row.get("namespace") or "",
        "pod": row.get("pod") or "",
        "container": row.get("container") or "",
        "pid": pid,
        "tid": tid,
        # A latency probe reports a duration; the others (retransmit) count occurrences.
        "value": value_ns / 1e6 if value_ns is not None else 1,
        "unit": "ms" if value_ns is not None else "count",
        "status": "error" if errno else "warning" if signal == "retransmit" else "ok",
    }
    saddr, daddr = row.get("saddr"), row.get("daddr")
    if saddr is not None and daddr is not None:
        tuple_: dict[str, Any] = {"src_ip": saddr, "dst_ip": daddr, "protocol": "tcp"}
        for key, out in (("sport", "src_port"), ("dport", "dst_port")):
            if row.get(key) is not None:
                tuple_[out] = int(row[key])
        event["conn_tuple"] = tuple_
    for key in ("trace_id", "span_id"):
        if row.get(key) is not None:
            event[key] = row[key]
    if errno is not None:
        event["errno"] = int(errno)
    return event


def _count(row: Mapping[str, Any], key: str) -> int:
    # int() also turns numpy integers into ones jsonschema and json accept.
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise DataError(f"kernel_events row: {key} {value!r} is not a non-negative integer", hint=_ROW_HINT)
    return int(value)


@functools.cache
def _schema(name: str) -> dict[str, Any]:
    if name not in CONTRACTS:
        raise DataError(f"unknown contract {name!r}", hint=f"known contracts: {', '.join(CONTRACTS)}")
    return json.loads((CONTRACTS_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    # Without rfc3339-validator installed, "date-time" is not actually checked.
    return jsonschema.Draft202012Validator(_schema(name), format_checker=jsonschema.FormatChecker())
