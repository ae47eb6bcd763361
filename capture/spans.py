"""OTLP spans flattened to one Arrow row per span: the `spans/` table of a run.

Well-known attributes become typed columns, named after the current OpenTelemetry
semantic conventions (GenAI ones from open-telemetry/semantic-conventions-genai).
Every other span attribute, and every other resource attribute (as `resource.<key>`),
is kept as text in the `attributes` map, so nothing an application sends is lost.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from runfmt.errors import DataError
from runfmt.schema import SPANS

# Indexed by the OTLP enum values; an unknown future value becomes null.
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_INT64_MAX = 2**63 - 1


def _json_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_json_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _json_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return render(value)
    return None if which is None else getattr(value, which)


def render(value: AnyValue) -> str | None:
    """An attribute value as text: scalars plainly (bytes in base64, as OTLP/JSON), arrays and maps as JSON."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return repr(value.double_value)
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which is None:
        return None
    return json.dumps(_json_value(value), separators=(",", ":"))


def _as_int(value: AnyValue) -> int | None:
    which = value.WhichOneof("value")
    if which == "int_value":
        return value.int_value
    if which == "string_value":  # e.g. a port sent as "443"
        try:
            number = int(value.string_value)
        except ValueError:
            return None
    elif which == "double_value" and value.double_value.is_integer():
        number = int(value.double_value)
    else:
        return None
    return number if -_INT64_MAX - 1 <= number <= _INT64_MAX else None


def _as_float(value: AnyValue) -> float | None:
    which = value.WhichOneof("value")
    if which in ("double_value", "int_value"):
        return float(getattr(value, which))
    if which == "string_value":
        try:
            return float(value.string_value)
        except ValueError:
            return None
    return None


Convert = Callable[[AnyValue], Any]

# attribute key -> (column, converter)
_RESOURCE_COLUMNS: dict[str, tuple[str, Convert]] = {
    "service.name": ("service_name", render),
    "host.name": ("host_name", render),
    "process.pid": ("process_pid", _as_int),
    "k8s.pod.name": ("k8s_pod_name", render),
    "k8s.namespace.name": ("k8s_namespace_name", render),
    "k8s.container.name": ("k8s_container_name", render),
    "k8s.node.name": ("k8s_node_name", render),
    "k8s.pod.uid": ("k8s_pod_uid", render),
}
_SPAN_COLUMNS: dict[str, tuple[str, Convert]] = {
    "thread.id": ("thread_id", _as_int),
    "gen_ai.provider.name": ("gen_ai_provider_name", render),
    "gen_ai.operation.name": ("gen_ai_operation_name", render),
    "gen_ai.request.model": ("gen_ai_request_model", render),
    "gen_ai.response.model": ("gen_ai_response_model", render),
    "gen_ai.usage.input_tokens": ("gen_ai_usage_input_tokens", _as_int),
    "gen_ai.usage.output_tokens": ("gen_ai_usage_output_tokens", _as_int),
    # semconv defines this name for the server's TTFT metric only; a span may carry it too
    "gen_ai.server.time_to_first_token": ("gen_ai_server_time_to_first_token", _as_float),
    "gen_ai.response.time_to_first_chunk": ("gen_ai_response_time_to_first_chunk", _as_float),
    "server.address": ("server_address", render),
    "server.port": ("server_port", _as_int),
    "network.peer.address": ("network_peer_address", render),
    "network.peer.port": ("network_peer_port", _as_int),
    "client.address": ("client_address", render),
    "client.port": ("client_port", _as_int),
    "url.full": ("url_full", render),
    "http.request.method": ("http_request_method", render),
    "http.response.status_code": ("http_response_status_code", _as_int),
}
# Older names still sent by common instrumentations (vLLM and SGLang send the gen_ai.usage
# and gen_ai.latency ones). They fill a column only when its current name is absent, and
# stay in `attributes` as sent. net.peer.* is left out: its meaning depends on span kind.
_FALLBACKS: dict[str, tuple[str, Convert]] = {
    "gen_ai.system": ("gen_ai_provider_name", render),
    "gen_ai.usage.prompt_tokens": ("gen_ai_usage_input_tokens", _as_int),
    "gen_ai.usage.completion_tokens": ("gen_ai_usage_output_tokens", _as_int),
    "gen_ai.latency.time_to_first_token": ("gen_ai_server_time_to_first_token", _as_float),
    "http.method": ("http_request_method", render),
    "http.status_code": ("http_response_status_code", _as_int),
    "http.url": ("url_full", render),
    "net.sock.peer.addr": ("network_peer_address", render),
    "net.sock.peer.port": ("network_peer_port", _as_int),
}


def _resource(attributes: Iterable[KeyValue]) -> tuple[dict[str, Any], list[str], list[str | None]]:
    """Resource columns, plus the other resource attributes as `resource.<key>` map entries."""
    columns: dict[str, Any] = {}
    keys: list[str] = []
    values: list[str | None] = []
    for kv in attributes:
        target = _RESOURCE_COLUMNS.get(kv.key)
        converted = target[1](kv.value) if target else None
        if converted is not None:
            columns[target[0]] = converted
        else:  # not a column, or a value of the wrong type: keep it as sent
            keys.append("resource." + kv.key)
            values.append(render(kv.value))
    return columns, keys, values


def _hex_id(raw: bytes, size: int, what: str, index: int) -> str:
    if len(raw) != size:
        raise DataError(
            f"OTLP span {index}: {what} has {len(raw)} bytes, expected {size}",
            hint="the sender does not follow OTLP; check its exporter",
        )
    return raw.hex()


def flatten(request: ExportTraceServiceRequest) -> pa.Table:
    """One SPANS row per span in the request. Raises DataError for ids of the wrong size.

    Columns are built as Python lists and converted once per column; span-attribute
    columns are preallocated with nulls so an absent attribute costs nothing.
    """
    n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    span_columns = {column: [None] * n for column, _ in _SPAN_COLUMNS.values()}
    span_targets = {key: (span_columns[col], conv) for key, (col, conv) in _SPAN_COLUMNS.items()}
    fallback_targets = {key: (span_columns[col], conv) for key, (col, conv) in _FALLBACKS.items()}
    resource_columns: dict[str, list[Any]] = {column: [] for column, _ in _RESOURCE_COLUMNS.values()}
    trace_ids: list[str] = []
    span_ids: list[str] = []
    parent_ids: list[str | None] = []
    names: list[str] = []
    kinds: list[str | None] = []
    starts: list[int | None] = []
    ends: list[int | None] = []
    status_codes: list[str | None] = []
    status_messages: list[str | None] = []
    scope_names: list[str | None] = []
    offsets = [0]
    map_keys: list[str] = []
    map_values: list[str | None] = []

    i = 0
    for rs in request.resource_spans:
        res_values, res_keys, res_texts = _resource(rs.resource.attributes)
        for ss in rs.scope_spans:
            count = len(ss.spans)
            scope_names.extend([ss.scope.name or None] * count)
            for column, values in resource_columns.items():
                values.extend([res_values.get(column)] * count)
            for span in ss.spans:
                trace_ids.append(_hex_id(span.trace_id, 16, "trace_id", i))
                span_ids.append(_hex_id(span.span_id, 8, "span_id", i))
                parent = span.parent_span_id
                parent_ids.append(_hex_id(parent, 8, "parent_span_id", i) if parent else None)
                names.append(span.name)
                kinds.append(_KINDS.get(span.kind))
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                starts.append(start if start <= _INT64_MAX else None)  # fixed64 on the wire
                ends.append(end if end <= _INT64_MAX else None)
                status_codes.append(_STATUS.get(span.status.code))
                status_messages.append(span.status.message or None)
                for kv in span.attributes:
                    key, value = kv.key, kv.value
                    target = span_targets.get(key)
                    if target is not None:
                        converted = target[1](value)
                        if converted is not None:
                            target[0][i] = converted
                            continue
                    else:
                        fallback = fallback_targets.get(key)
                        if fallback is not None and fallback[0][i] is None:
                            # a current name seen later overwrites this, one seen earlier wins
                            fallback[0][i] = fallback[1](value)
                    map_keys.append(key)
                    map_values.append(render(value))
                map_keys.extend(res_keys)
                map_values.extend(res_texts)
                offsets.append(len(map_keys))
                i += 1

    start_arr = pa.array(starts, pa.int64())
    end_arr = pa.array(ends, pa.int64())
    columns: dict[str, pa.Array] = {
        "trace_id": pa.array(trace_ids, pa.string()),
        "span_id": pa.array(span_ids, pa.string()),
        "parent_span_id": pa.array(parent_ids, pa.string()),
        "name": pa.array(names, pa.string()),
        "kind": pa.array(kinds, pa.string()),
        "start_ns": start_arr,
        "end_ns": end_arr,
        "duration_ns": pc.subtract(end_arr, start_arr),  # both in [0, 2**63): cannot overflow
        "status_code": pa.array(status_codes, pa.string()),
        "status_message": pa.array(status_messages, pa.string()),
        "scope_name": pa.array(scope_names, pa.string()),
        "attributes": pa.MapArray.from_arrays(
            pa.array(offsets, pa.int32()), pa.array(map_keys, pa.string()), pa.array(map_values, pa.string())
        ),
    }
    for column, values in (resource_columns | span_columns).items():
        columns[column] = pa.array(values, SPANS.field(column).type)
    return pa.Table.from_arrays([columns[f.name] for f in SPANS], schema=SPANS)
