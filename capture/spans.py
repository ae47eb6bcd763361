"""OTLP spans flattened to Arrow: the `spans/` and `span_resources/` tables of a run.

Well-known attributes become typed columns, named after the current OpenTelemetry
semantic conventions (GenAI ones from open-telemetry/semantic-conventions-genai).
Every other span attribute is kept as text in the span's `attributes` map. Every other
resource attribute is kept once per resource and export request, as `resource.<key>` in
the `attributes` map of a `span_resources` row, which each span names by `resource_id`:
`map_concat(spans.attributes, span_resources.attributes)` is all a span carried.

Memory follows the size of the request, whatever its shape:
  * OpenTelemetry's attribute limits (AttributeLimits) hold for each span and each
    resource: the first `count` attributes are kept, as the SDKs keep them, and a value's
    text is cut to `value_length` characters; what was cut is counted (Flattened);
  * what belongs to a resource or a scope (the resource columns, resource_id, scope_name)
    is dictionary-encoded: one copy per resource or scope, an index per span;
  * spans become Arrow CHUNK_SPANS at a time, so Python objects exist for one chunk only.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from runfmt.errors import DataError
from runfmt.schema import SPAN_RESOURCES, SPANS

# Indexed by the OTLP enum values; an unknown future value becomes null.
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_INT64_MAX = 2**63 - 1

CHUNK_SPANS = 4096  # spans per Arrow chunk
CHUNK_ENTRIES = 65_536  # attribute map entries that end a chunk early


@dataclass(frozen=True)
class AttributeLimits:
    """OpenTelemetry's attribute limits, applied to each span and each resource (config
    otlp.attribute_count_limit and otlp.attribute_value_length_limit)."""

    count: int = 128  # the SDKs' default for OTEL_ATTRIBUTE_COUNT_LIMIT
    value_length: int = 4096  # OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, unlimited in the SDKs: finite here

    @classmethod
    def from_config(cls, otlp: Mapping[str, Any]) -> AttributeLimits:
        return cls(otlp.get("attribute_count_limit", cls.count),
                   otlp.get("attribute_value_length_limit", cls.value_length))


DEFAULT_LIMITS = AttributeLimits()


@dataclass(frozen=True)
class Flattened:
    """One export request as the run's tables, and what the attribute limits cut from it."""

    spans: pa.Table  # SPANS_ENCODED: one row per span
    resources: pa.Table  # SPAN_RESOURCES: one row per resource that has spans
    attributes_dropped: int  # attributes past the count limit, of spans and resources
    values_truncated: int  # values cut to the length limit

    @property
    def num_spans(self) -> int:
        return self.spans.num_rows


_TEXT = pa.dictionary(pa.int32(), pa.string())
# SPANS with the columns that repeat a resource's or a scope's value dictionary-encoded;
# runfmt.writer.PartWriter keeps them so when it writes the part
PER_RESOURCE = ("service_name", "host_name", "k8s_pod_name", "k8s_namespace_name", "k8s_container_name",
                "k8s_node_name", "k8s_pod_uid", "resource_id")
SPANS_ENCODED = pa.schema([f.with_type(_TEXT) if f.name in (*PER_RESOURCE, "scope_name") else f for f in SPANS])


def _json_pieces(value: AnyValue, limit: int) -> Iterator[str]:
    """An array or map value as JSON, in pieces; strings are cut to `limit` + 1 characters
    first, as more could only be cut off again."""
    which = value.WhichOneof("value")
    if which == "array_value":
        yield "["
        for i, v in enumerate(value.array_value.values):
            if i:
                yield ","
            yield from _json_pieces(v, limit)
        yield "]"
    elif which == "kvlist_value":
        yield "{"
        for i, kv in enumerate(value.kvlist_value.values):
            yield ("," if i else "") + json.dumps(kv.key[:limit + 1]) + ":"
            yield from _json_pieces(kv.value, limit)
        yield "}"
    elif which == "string_value":
        yield json.dumps(value.string_value[:limit + 1])
    elif which == "bytes_value":
        yield json.dumps(_base64(value.bytes_value, limit))
    elif which == "double_value":
        yield json.dumps(value.double_value)
    elif which == "int_value":
        yield str(value.int_value)
    elif which == "bool_value":
        yield "true" if value.bool_value else "false"
    else:
        yield "null"


def _base64(raw: bytes, limit: int | None) -> str:
    """bytes in base64, as OTLP/JSON writes them; with a limit, only enough of them to
    give more than `limit` characters."""
    if limit is not None:
        raw = raw[:3 * (limit // 4 + 1)]
    return base64.b64encode(raw).decode("ascii")


def render(value: AnyValue, limit: int | None = None) -> str | None:
    """An attribute value as text: scalars plainly (bytes in base64, as OTLP/JSON), arrays and
    maps as JSON. With a limit, text longer than `limit` characters comes back cut to
    `limit` + 1, and building it never takes more than that."""
    which = value.WhichOneof("value")
    if which in ("string_value", "bytes_value"):
        text = value.string_value if which == "string_value" else _base64(value.bytes_value, limit)
        return text if limit is None else text[:limit + 1]
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return repr(value.double_value)
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which is None:
        return None
    pieces = _json_pieces(value, _INT64_MAX if limit is None else limit)
    if limit is None:
        return "".join(pieces)
    kept, size = [], 0
    for piece in pieces:
        kept.append(piece)
        size += len(piece)
        if size > limit:
            break
    return "".join(kept)[:limit + 1]


def _as_int(value: AnyValue) -> int | None:
    which = value.WhichOneof("value")
    if which == "int_value":
        return value.int_value
    if which == "string_value":  # e.g. a port sent as "443"
        try:
            number = int(value.string_value)
        except ValueError:  # not a number, or more than Python's 4300 digits
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

# attribute key -> (column, converter); `render` stands for text cut to the length limit
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
_RESOURCE_TEXT = [column for column, conv in _RESOURCE_COLUMNS.values() if conv is render]


class _Limiter:
    """Applies the attribute limits and counts what they cut."""

    def __init__(self, limits: AttributeLimits) -> None:
        self.count = limits.count
        self.length = limits.value_length
        self.dropped = 0
        self.truncated = 0

    def attributes(self, attributes: Sequence[KeyValue]) -> Iterable[KeyValue]:
        extra = len(attributes) - self.count
        if extra <= 0:
            return attributes
        self.dropped += extra
        return itertools.islice(attributes, self.count)

    def text(self, value: AnyValue) -> str | None:
        text = render(value, self.length)
        if text is not None and len(text) > self.length:
            self.truncated += 1
            return text[:self.length]
        return text

    def converter(self, convert: Convert) -> Convert:
        return self.text if convert is render else convert


class _Codes:
    """Distinct texts, each with its index in a dictionary."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}

    def code(self, text: str | None) -> int | None:
        return None if text is None else self._index.setdefault(text, len(self._index))

    def dictionary(self) -> pa.Array:
        return pa.array(list(self._index), pa.string())


class _Resources:
    """The resources of one request: their SPAN_RESOURCES rows, and for each the
    dictionary codes (or value) of the resource columns its spans repeat."""

    def __init__(self, limiter: _Limiter) -> None:
        self.limiter = limiter
        self.targets = {key: (column, limiter.converter(conv)) for key, (column, conv) in _RESOURCE_COLUMNS.items()}
        self.ids: list[str] = []
        self.offsets = [0]
        self.keys: list[str] = []
        self.values: list[str | None] = []
        self.codes = {column: _Codes() for column in (*_RESOURCE_TEXT, "resource_id")}
        self.per_resource: dict[str, list[Any]] = {column: [] for column in (*_RESOURCE_TEXT, "resource_id",
                                                                             "process_pid")}

    def add(self, attributes: Sequence[KeyValue]) -> int:
        """Takes one resource; returns its number in this request."""
        columns: dict[str, Any] = {}
        for kv in self.limiter.attributes(attributes):
            target = self.targets.get(kv.key)
            converted = target[1](kv.value) if target else None
            if converted is not None:
                columns[target[0]] = converted
            else:  # not a column, or a value of the wrong type: keep it as sent
                self.keys.append("resource." + kv.key)
                self.values.append(self.limiter.text(kv.value))
        self.offsets.append(len(self.keys))
        # random, so it tells nothing of the attributes (a scrubbed run keeps it as is)
        columns["resource_id"] = os.urandom(8).hex()
        self.ids.append(columns["resource_id"])
        for column, codes in self.codes.items():
            self.per_resource[column].append(codes.code(columns.get(column)))
        self.per_resource["process_pid"].append(columns.get("process_pid"))
        return len(self.ids) - 1

    def table(self) -> pa.Table:
        attributes = pa.MapArray.from_arrays(pa.array(self.offsets, pa.int32()), pa.array(self.keys, pa.string()),
                                             pa.array(self.values, pa.string()))
        return pa.Table.from_arrays([pa.array(self.ids, pa.string()), attributes], schema=SPAN_RESOURCES)

    def columns(self, numbers: list[pa.Array]) -> dict[str, list[pa.Array]]:
        """The resource columns of each chunk of spans, from the spans' resource numbers."""
        out: dict[str, list[pa.Array]] = {}
        pids = pa.array(self.per_resource["process_pid"], pa.int64())
        out["process_pid"] = [pc.take(pids, n) for n in numbers]
        for column, codes in self.codes.items():
            dictionary = codes.dictionary()
            per_resource = pa.array(self.per_resource[column], pa.int32())
            out[column] = [pa.DictionaryArray.from_arrays(pc.take(per_resource, n), dictionary) for n in numbers]
        return out


def _check_id(raw: bytes, size: int, what: str, index: int) -> None:
    if len(raw) != size:
        raise DataError(
            f"OTLP span {index}: {what} has {len(raw)} bytes, expected {size}",
            hint="the sender does not follow OTLP; check its exporter",
        )


def _check_ids(span: Span, index: int) -> None:
    """DataError when an id of span number `index` (in the request) has the wrong size."""
    _check_id(span.trace_id, 16, "trace_id", index)
    _check_id(span.span_id, 8, "span_id", index)
    if span.parent_span_id:
        _check_id(span.parent_span_id, 8, "parent_span_id", index)


def check_request(request: ExportTraceServiceRequest) -> int:
    """What `flatten` would refuse, checked without flattening: DataError for an id of the
    wrong size, with flatten's message; else the number of spans in the request."""
    i = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                _check_ids(span, i)
                i += 1
    return i


class _Chunk:
    """Up to CHUNK_SPANS spans as Python lists, until they become Arrow arrays."""

    def __init__(self) -> None:
        self.span_columns: dict[str, list[Any]] = {column: [None] * CHUNK_SPANS for column, _ in
                                                   _SPAN_COLUMNS.values()}
        self.trace_ids: list[str] = []
        self.span_ids: list[str] = []
        self.parent_ids: list[str | None] = []
        self.names: list[str] = []
        self.kinds: list[str | None] = []
        self.starts: list[int | None] = []
        self.ends: list[int | None] = []
        self.status_codes: list[str | None] = []
        self.status_messages: list[str | None] = []
        self.resources: list[int] = []  # the span's resource number in the request
        self.scopes: list[int | None] = []  # its scope name's code
        self.offsets = [0]
        self.keys: list[str] = []
        self.values: list[str | None] = []

    def full(self) -> bool:
        return len(self.trace_ids) >= CHUNK_SPANS or len(self.keys) >= CHUNK_ENTRIES

    def arrays(self) -> dict[str, pa.Array]:
        n = len(self.trace_ids)
        start = pa.array(self.starts, pa.int64())
        end = pa.array(self.ends, pa.int64())
        out = {
            "trace_id": pa.array(self.trace_ids, pa.string()),
            "span_id": pa.array(self.span_ids, pa.string()),
            "parent_span_id": pa.array(self.parent_ids, pa.string()),
            "name": pa.array(self.names, pa.string()),
            "kind": pa.array(self.kinds, pa.string()),
            "start_ns": start,
            "end_ns": end,
            "duration_ns": pc.subtract(end, start),  # both in [0, 2**63): cannot overflow
            "status_code": pa.array(self.status_codes, pa.string()),
            "status_message": pa.array(self.status_messages, pa.string()),
            "attributes": pa.MapArray.from_arrays(pa.array(self.offsets, pa.int32()), pa.array(self.keys, pa.string()),
                                                  pa.array(self.values, pa.string())),
        }
        for column, values in self.span_columns.items():
            out[column] = pa.array(values[:n], SPANS.field(column).type)
        return out


def flatten(request: ExportTraceServiceRequest, limits: AttributeLimits = DEFAULT_LIMITS) -> Flattened:
    """The request's spans (SPANS_ENCODED, one row per span) and resources (SPAN_RESOURCES),
    within `limits`. Raises DataError for ids of the wrong size (as `check_request` does)."""
    limiter = _Limiter(limits)
    span_targets = {key: (column, limiter.converter(conv)) for key, (column, conv) in _SPAN_COLUMNS.items()}
    fallback_targets = {key: (column, limiter.converter(conv)) for key, (column, conv) in _FALLBACKS.items()}
    resources = _Resources(limiter)
    scopes = _Codes()
    chunks: list[dict[str, pa.Array]] = []
    resource_numbers: list[pa.Array] = []
    scope_codes: list[pa.Array] = []

    def close(chunk: _Chunk) -> None:
        chunks.append(chunk.arrays())
        resource_numbers.append(pa.array(chunk.resources, pa.int32()))
        scope_codes.append(pa.array(chunk.scopes, pa.int32()))

    c = _Chunk()
    i = 0
    for rs in request.resource_spans:
        if not any(ss.spans for ss in rs.scope_spans):
            continue
        resource = resources.add(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = scopes.code(ss.scope.name or None)
            for span in ss.spans:
                if c.full():
                    close(c)
                    c = _Chunk()
                row = len(c.trace_ids)
                _check_ids(span, i)
                c.trace_ids.append(span.trace_id.hex())
                c.span_ids.append(span.span_id.hex())
                parent = span.parent_span_id
                c.parent_ids.append(parent.hex() if parent else None)
                c.names.append(span.name)
                c.kinds.append(_KINDS.get(span.kind))
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                c.starts.append(start if start <= _INT64_MAX else None)  # fixed64 on the wire
                c.ends.append(end if end <= _INT64_MAX else None)
                c.status_codes.append(_STATUS.get(span.status.code))
                c.status_messages.append(span.status.message or None)
                c.resources.append(resource)
                c.scopes.append(scope)
                for kv in limiter.attributes(span.attributes):
                    key, value = kv.key, kv.value
                    target = span_targets.get(key)
                    if target is not None:
                        converted = target[1](value)
                        if converted is not None:
                            c.span_columns[target[0]][row] = converted
                            continue
                    else:
                        fallback = fallback_targets.get(key)
                        if fallback is not None and c.span_columns[fallback[0]][row] is None:
                            # a current name seen later overwrites this, one seen earlier wins
                            c.span_columns[fallback[0]][row] = fallback[1](value)
                    c.keys.append(key)
                    c.values.append(limiter.text(value))
                c.offsets.append(len(c.keys))
                i += 1
    if c.trace_ids or not chunks:
        close(c)

    per_resource = resources.columns(resource_numbers)
    scope_dictionary = scopes.dictionary()
    per_resource["scope_name"] = [pa.DictionaryArray.from_arrays(codes, scope_dictionary) for codes in scope_codes]
    columns = [pa.chunked_array([chunk[f.name] for chunk in chunks] if f.name not in per_resource
                                else per_resource[f.name], f.type) for f in SPANS_ENCODED]
    return Flattened(pa.Table.from_arrays(columns, schema=SPANS_ENCODED), resources.table(),
                     limiter.dropped, limiter.truncated)
