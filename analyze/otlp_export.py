"""The analysis of recorded runs sent to an OTLP receiver (an OpenTelemetry Collector, Tempo):
what `sloan export otlp` does.

Per run, two signals:

  traces  every span of the run with its recorded trace id, span id, parent, start and end,
          kind, status, attributes and resource, plus what correlation matched to it
          (analyze/correlate.py, confidence >= 0.7) as the `slo.*` attributes of
          evidence_attributes(): the kernel evidence a trace backend then shows on the span.
  logs    one log record per v1 SLO event (docs/contracts/v1/slo-event, `sloan slo -o`) and
          per v1 incident attribution (docs/contracts/v1/incident-attribution,
          `sloan attribute -o`): the document as JSON text in the body, event name
          llm.slo.event or llm.incident.attribution, timestamp the event's (a request's end,
          a paging window's end).

No tracer makes the spans: they are rebuilt as the SDK's ReadableSpan and handed to the
stock OTLP exporter in batches, so their ids and times stay the recorded ones. Log records go
the same way, straight to the exporter, so a batch that fails is known at once (a background
processor would only log it) and stops the export with the exporter's reason.

A span's attributes come back from the run's columns and maps (runfmt/schema.py SPANS,
SPAN_RESOURCES): the typed columns with their types, every other attribute as the text the
recorder kept. A span of kind `unspecified` goes out as `internal` (the SDK has no other).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runfmt.errors import ConfigError, SloError

__all__ = ["DEFAULT_BATCH", "DEFAULT_TIMEOUT_S", "EVENT_ATTRIBUTION", "EVENT_SLO", "PROTOCOLS", "SIGNALS",
           "ExportError", "ExportSummary", "RunExport", "RunTelemetry", "Target", "evidence_attributes",
           "export_otlp", "failure_reason", "load_run"]

PROTOCOLS = ("http", "grpc")
SIGNALS = ("traces", "logs")
DEFAULT_BATCH = 512  # spans or log records per export request
DEFAULT_TIMEOUT_S = 10.0  # per export request, retries included (the exporters' default)

EVENT_SLO = "llm.slo.event"
EVENT_ATTRIBUTION = "llm.incident.attribution"

# the SPANS columns that hold a resource attribute, and its key (capture/spans.py, _RESOURCE_COLUMNS)
RESOURCE_KEYS = {
    "service_name": "service.name", "host_name": "host.name", "process_pid": "process.pid",
    "k8s_pod_name": "k8s.pod.name", "k8s_namespace_name": "k8s.namespace.name",
    "k8s_container_name": "k8s.container.name", "k8s_node_name": "k8s.node.name", "k8s_pod_uid": "k8s.pod.uid",
}
# the SPANS columns that hold a span attribute, and its key (capture/spans.py, _SPAN_COLUMNS)
SPAN_KEYS = {
    "thread_id": "thread.id",
    "gen_ai_provider_name": "gen_ai.provider.name",
    "gen_ai_operation_name": "gen_ai.operation.name",
    "gen_ai_request_model": "gen_ai.request.model",
    "gen_ai_response_model": "gen_ai.response.model",
    "gen_ai_usage_input_tokens": "gen_ai.usage.input_tokens",
    "gen_ai_usage_output_tokens": "gen_ai.usage.output_tokens",
    "gen_ai_server_time_to_first_token": "gen_ai.server.time_to_first_token",
    "gen_ai_response_time_to_first_chunk": "gen_ai.response.time_to_first_chunk",
    "server_address": "server.address",
    "server_port": "server.port",
    "network_peer_address": "network.peer.address",
    "network_peer_port": "network.peer.port",
    "client_address": "client.address",
    "client_port": "client.port",
    "url_full": "url.full",
    "http_request_method": "http.request.method",
    "http_response_status_code": "http.response.status_code",
}
# older names that fill a column when its current name is absent and stay in the span's map as
# sent (capture/spans.py, _FALLBACKS): such a column is not sent again under its current name
FALLBACK_KEYS = {
    "gen_ai.system": "gen_ai_provider_name",
    "gen_ai.usage.prompt_tokens": "gen_ai_usage_input_tokens",
    "gen_ai.usage.completion_tokens": "gen_ai_usage_output_tokens",
    "gen_ai.latency.time_to_first_token": "gen_ai_server_time_to_first_token",
    "http.method": "http_request_method",
    "http.status_code": "http_response_status_code",
    "http.url": "url_full",
    "net.sock.peer.addr": "network_peer_address",
    "net.sock.peer.port": "network_peer_port",
}
RESOURCE_PREFIX = "resource."  # a resource attribute in a `attributes` map (runfmt/schema.py)
# signals with a duration, as sql/correlate_enrich.sql aggregates them
TIMED_SIGNALS = ("dns", "connect", "tls", "runqueue", "mem_reclaim")

_KINDS = ("internal", "server", "client", "producer", "consumer")


class ExportError(SloError):
    """The OTLP receiver could not be reached, or refused what was sent."""


# --- where it goes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An OTLP receiver: protocol, base URL, headers, TLS and the timeout of one export request.

    The endpoint is a base URL: http:// sends in plain text, https:// with TLS, and HOST:PORT
    with TLS unless `insecure`. For http the signal paths (/v1/traces, /v1/logs) are added to
    it (a URL already ending in one is taken without it); grpc uses host and port only."""

    protocol: str
    endpoint: str  # normalized: scheme://host:port[/path]
    headers: tuple[tuple[str, str], ...] = ()
    insecure: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def parse(cls, endpoint: str, protocol: str = "http", headers: Iterable[str] = (), insecure: bool = False,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> Target:
        """Raises ConfigError naming what is wrong with the endpoint, a header or the protocol."""
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}",
                              "pass --protocol http (port 4318) or --protocol grpc (port 4317)")
        example = "http://localhost:4318" if protocol == "http" else "http://localhost:4317"
        text = endpoint.strip()
        if "://" not in text:  # HOST:PORT
            text = ("http://" if insecure else "https://") + text
        url = urlsplit(text)
        try:
            port = url.port
        except ValueError:
            port = -1
        if url.scheme not in ("http", "https") or not url.hostname or port == -1 or url.query or url.fragment:
            raise ConfigError(f"endpoint {endpoint!r} is not an OTLP receiver's URL",
                              f"pass a base URL such as --endpoint {example} (https:// for TLS)")
        if insecure and url.scheme == "https" and "://" in endpoint:
            raise ConfigError(f"--insecure sends without TLS, but endpoint {endpoint!r} asks for TLS (https://)",
                              f"pass an http:// endpoint (such as {example}) for plain text, or leave out --insecure")
        path = url.path.rstrip("/")
        for signal in SIGNALS:
            path = path.removesuffix(f"/v1/{signal}")
        pairs = []
        for h in headers:
            key, sep, value = h.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"header {h!r} is not KEY=VALUE",
                                  "pass each header as --headers KEY=VALUE, e.g. --headers authorization='Bearer T'")
            pairs.append((key.strip(), value.strip()))
        if not timeout_s > 0:
            raise ConfigError(f"timeout {timeout_s!r} s is not positive", "pass --timeout SECONDS, e.g. 10")
        return cls(protocol, f"{url.scheme}://{url.netloc}{path}", tuple(pairs), url.scheme == "http",
                   float(timeout_s))

    def url(self, signal: str) -> str:
        """Where `signal` (traces, logs) goes: the URL the exporter posts to, or the gRPC target."""
        if self.protocol == "grpc":
            u = urlsplit(self.endpoint)
            return f"{u.scheme}://{u.netloc}"
        return f"{self.endpoint}/v1/{signal}"

    def exporter(self, signal: str):
        """The stock OTLP exporter of `signal`, for this receiver."""
        if self.protocol == "http":
            headers = dict(self.headers) or None
            if signal == "traces":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                return OTLPSpanExporter(endpoint=self.url(signal), headers=headers, timeout=self.timeout_s)
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            return OTLPLogExporter(endpoint=self.url(signal), headers=headers, timeout=self.timeout_s)
        # gRPC metadata keys are lower case
        metadata = tuple((k.lower(), v) for k, v in self.headers) or None
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
            return GrpcSpans(endpoint=self.url(signal), insecure=self.insecure, headers=metadata,
                             timeout=self.timeout_s)
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        return GrpcLogs(endpoint=self.url(signal), insecure=self.insecure, headers=metadata, timeout=self.timeout_s)

    def to_dict(self) -> dict:
        # header values may be credentials: their names only
        return {"protocol": self.protocol, "endpoint": self.endpoint,
                "urls": {s: self.url(s) for s in SIGNALS}, "headers": [k for k, _ in self.headers],
                "tls": not self.insecure, "timeout_s": self.timeout_s}


# --- what goes: one run's spans and documents -------------------------------------------------


@dataclass(frozen=True)
class LogDocument:
    """One v1 document and how it goes out as a log record."""

    event_name: str  # EVENT_SLO or EVENT_ATTRIBUTION
    document: dict
    time_ns: int
    warn: bool  # severity WARN (else INFO)
    attributes: dict[str, Any]
    trace_id: str | None = None  # 32 hex digits
    span_id: str | None = None  # 16 hex digits


@dataclass
class RunTelemetry:
    """What one run sends: its spans with the correlation's aggregates, and its v1 documents."""

    run_dir: Path
    run_id: str
    scenario: str
    spans: Any  # pa.Table: the columns of sql/correlate_enrich.sql (SPANS, then per-signal aggregates)
    best_confidence: dict[tuple[str, str], float]  # (trace_id, span_id) -> best matched confidence
    resources: dict[str, list[tuple[str, str]]]  # resource_id -> its SPAN_RESOURCES attributes
    documents: list[LogDocument] = field(default_factory=list)
    workload: dict[str, str] = field(default_factory=dict)  # service, namespace: the log records' resource
    notes: list[str] = field(default_factory=list)


def evidence_attributes(row: Mapping[str, Any], confidence: float | None = None) -> dict[str, Any]:
    """The `slo.*` attributes of one span, from its row of enriched_spans (sql/correlate_enrich.sql)
    and the best confidence of its matched events:

      slo.kernel.events              matched kernel events, any signal (0 included: it was correlated)
      slo.kernel.<s>.count           for s in dns, connect, tls, runqueue, mem_reclaim, when > 0:
      slo.kernel.<s>.sum_ms            the events, their summed and largest duration in ms
      slo.kernel.<s>.max_ms
      slo.kernel.retransmits         matched TCP retransmits, when > 0
      slo.correlation.tier           the best tier of its matched events: trace_id, pod_pid, pod_conn
      slo.correlation.confidence     that tier's confidence (1.0, 0.9, 0.8)
    """
    from analyze.correlate import CONFIDENCE

    matched = row.get("matched_events")
    if matched is None:
        return {}
    out: dict[str, Any] = {"slo.kernel.events": int(matched)}
    for s in TIMED_SIGNALS:
        if row.get(f"{s}_count"):
            out[f"slo.kernel.{s}.count"] = int(row[f"{s}_count"])
            out[f"slo.kernel.{s}.sum_ms"] = float(row[f"{s}_ms_sum"])
            out[f"slo.kernel.{s}.max_ms"] = float(row[f"{s}_ms_max"])
    if row.get("retransmits"):
        out["slo.kernel.retransmits"] = int(row["retransmits"])
    if matched and confidence is not None:
        tier = next((t for t, c in CONFIDENCE.items() if c == confidence), None)
        if tier is not None:
            out["slo.correlation.tier"] = tier
            out["slo.correlation.confidence"] = float(confidence)
    return out


def _timestamp_ns(rfc3339: str) -> int:
    """A document's RFC 3339 timestamp (analyze/slo.py rfc3339, microseconds) as ns since the epoch."""
    t = datetime.fromisoformat(rfc3339)
    return (int(t.timestamp()) * 1_000_000 + t.microsecond) * 1000


def _correlation_tables(con) -> tuple[Any, Any, Any]:
    """enriched spans, matched events, span resources of the run whose views `con` holds, once
    analyze.correlate.prepare has run on it."""
    from analyze.correlate import OUTPUTS
    from runfmt import queries

    return (queries.run(con, OUTPUTS["enriched_spans.parquet"]), queries.run(con, OUTPUTS["correlated.parquet"]),
            con.table("span_resources").to_arrow_table())


def load_run(run_dir: Path, config: Mapping, model=None, *, budget: float | None = None,
             documents: bool = True) -> RunTelemetry:
    """One run's spans, correlated with its kernel events, and (with `documents`) its v1 SLO
    events and incident attributions (`model`: analyze.attribution.Model, the prior when None).
    A run without requests (no load generator) has spans only; RunTelemetry.notes says so."""
    import pyarrow.compute as pc

    from analyze import correlate
    from analyze.attribution import Model, attribute_evidence, collect_run
    from analyze.session import open_runs
    from analyze.slo import RunInfo

    run_dir = Path(run_dir)
    info = RunInfo.read(run_dir)
    window_ms = int(config.get("correlation", {}).get("window_ms", correlate.DEFAULT_WINDOW_MS))
    runs = open_runs([run_dir])
    try:
        n_requests, n_events = runs.use(lambda con: con.execute(
            "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM kernel_events)").fetchone())

        def correlated(con):
            correlate.prepare(con, window_ms)
            return _correlation_tables(con)

        with_slo = bool(n_requests) and documents
        tables = None if with_slo else runs.use(correlated)
    finally:
        runs.con.close()
    notes: list[str] = []
    docs: list[LogDocument] = []
    workload: dict[str, str] = {}
    if with_slo:
        ev = collect_run(run_dir, config, budget=budget, window_ms=window_ms,
                         also=lambda con, _ev: _correlation_tables(con))
        tables = ev.extra
        workload = {"service": ev.workload.service, "namespace": ev.workload.namespace}
    elif documents:
        notes.append("no requests (requests/*.parquet): spans only, no SLO events or attributions")
    if not n_events:
        notes.append("no kernel events: spans sent without kernel evidence")
    enriched, matched, span_resources = tables
    best: dict[tuple[str, str], float] = {}
    if matched.num_rows:
        grouped = matched.group_by(["trace_id", "span_id"]).aggregate([("confidence", "max")])
        best = dict(zip(zip(grouped.column("trace_id").to_pylist(), grouped.column("span_id").to_pylist()),
                        grouped.column("confidence_max").to_pylist()))
    resources = dict(zip(span_resources.column("resource_id").to_pylist(),
                         span_resources.column("attributes").to_pylist()))
    telemetry = RunTelemetry(run_dir, info.run_id, info.scenario, enriched if n_events else _bare(enriched),
                             best, resources, docs, workload, notes)
    if with_slo:
        # the span a request's log records point at: the first of its trace (the entry span)
        first: dict[str, str] = {}
        order = pc.sort_indices(enriched, [("start_ns", "ascending")])
        for t, s in zip(pc.take(enriched.column("trace_id"), order).to_pylist(),
                        pc.take(enriched.column("span_id"), order).to_pylist()):
            first.setdefault(t, s)
        base = {"slo.run.id": info.run_id}
        for e in ev.slo.events():
            trace = e.get("trace_id")
            docs.append(LogDocument(
                EVENT_SLO, e, _timestamp_ns(e["timestamp"]), e["status"] != "ok",
                {**base, "slo.sli": e["sli_name"], "slo.status": e["status"]}, trace, first.get(trace)))
        ra = attribute_evidence(ev, model or Model.prior())
        for wa, doc in zip(ra.windows, ra.documents()):
            docs.append(LogDocument(
                EVENT_ATTRIBUTION, doc, wa.window.end_ns, True,
                {**base, "slo.fault_domain": doc["predicted_fault_domain"], "slo.confidence": doc["confidence"]}))
    return telemetry


def _bare(enriched):
    """Spans of a run without kernel events: no evidence columns, so no `slo.kernel.*` attributes."""
    from runfmt.schema import SPANS

    return enriched.select([f.name for f in SPANS])


# --- SDK objects -----------------------------------------------------------------------------


class _Builder:
    """Rows of a RunTelemetry's spans and its documents as the SDK's ReadableSpan and
    ReadableLogRecord; resources and scopes made once each."""

    def __init__(self, run: RunTelemetry) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.run = run
        self._resources: dict[tuple, Any] = {}
        self._scopes: dict[str | None, Any] = {}
        self._scope_type = InstrumentationScope

    def resource(self, attributes: dict[str, Any]):
        from opentelemetry.sdk.resources import Resource

        key = tuple(sorted(attributes.items()))
        found = self._resources.get(key)
        if found is None:
            found = self._resources[key] = Resource(attributes)
        return found

    def scope(self, name: str | None):
        if name not in self._scopes:
            self._scopes[name] = self._scope_type(name or "")
        return self._scopes[name]

    def span(self, row: Mapping[str, Any]):
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        trace_id = int(row["trace_id"], 16)
        flags = TraceFlags(TraceFlags.SAMPLED)
        context = SpanContext(trace_id, int(row["span_id"], 16), is_remote=False, trace_flags=flags)
        parent = None
        if row.get("parent_span_id"):
            parent = SpanContext(trace_id, int(row["parent_span_id"], 16), is_remote=False, trace_flags=flags)
        resource: dict[str, Any] = {key: row[c] for c, key in RESOURCE_KEYS.items() if row.get(c) is not None}
        for key, value in self.run.resources.get(row.get("resource_id"), ()) or ():
            resource[key.removeprefix(RESOURCE_PREFIX)] = value
        attributes: dict[str, Any] = {}
        for key, value in row.get("attributes") or ():
            if key.startswith(RESOURCE_PREFIX):  # runs recorded before span_resources kept them here
                resource[key.removeprefix(RESOURCE_PREFIX)] = value
            elif value is not None:
                attributes[key] = value
        fallbacks = {FALLBACK_KEYS[k]: v for k, v in attributes.items() if k in FALLBACK_KEYS}
        for column, key in SPAN_KEYS.items():
            value = row.get(column)
            if value is not None and not (column in fallbacks and fallbacks[column] == _text(value)):
                attributes[key] = value
        attributes["slo.run.id"] = self.run.run_id
        attributes.update(evidence_attributes(row, self.run.best_confidence.get((row["trace_id"], row["span_id"]))))
        kind = row.get("kind")
        code = {"ok": StatusCode.OK, "error": StatusCode.ERROR}.get(row.get("status_code"), StatusCode.UNSET)
        # the SDK takes a description with an error status only
        status = Status(code, row.get("status_message") if code is StatusCode.ERROR else None)
        return ReadableSpan(
            name=row.get("name") or "", context=context, parent=parent, resource=self.resource(resource),
            attributes=attributes, kind=SpanKind[kind.upper()] if kind in _KINDS else SpanKind.INTERNAL,
            status=status, start_time=row.get("start_ns") or 0, end_time=row.get("end_ns") or 0,
            instrumentation_scope=self.scope(row.get("scope_name")))

    def spans(self, batch_size: int) -> Iterator[list]:
        table = self.run.spans
        for offset in range(0, table.num_rows, batch_size):
            yield [self.span(row) for row in table.slice(offset, batch_size).to_pylist()]

    def log(self, doc: LogDocument):
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord
        from opentelemetry.trace import NonRecordingSpan, SpanContext, set_span_in_context

        context = None
        if doc.trace_id:
            span_context = SpanContext(int(doc.trace_id, 16), int(doc.span_id, 16) if doc.span_id else 0,
                                       is_remote=False)
            context = set_span_in_context(NonRecordingSpan(span_context))
        severity = SeverityNumber.WARN if doc.warn else SeverityNumber.INFO
        record = LogRecord(
            timestamp=doc.time_ns, context=context, severity_number=severity, severity_text=severity.name,
            body=json.dumps(doc.document, separators=(",", ":")),
            attributes={"event.name": doc.event_name, **doc.attributes}, event_name=doc.event_name)
        w = self.run.workload
        resource = self.resource({"service.name": w.get("service", "unknown"),
                                  **({"k8s.namespace.name": w["namespace"]} if w.get("namespace") else {})})
        return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=self.scope("sloan"))

    def logs(self, batch_size: int) -> Iterator[list]:
        docs = self.run.documents
        for offset in range(0, len(docs), batch_size):
            yield [self.log(d) for d in docs[offset:offset + batch_size]]


def _text(value: Any) -> str:
    """A typed column's value as the recorder renders it in a map (capture/spans.py render)."""
    return repr(value) if isinstance(value, float) else str(value)


# --- sending ---------------------------------------------------------------------------------


class _Messages(logging.Handler):
    """What the exporters log while one batch goes out: their only word on why it failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelno, record.getMessage()))
        except Exception:  # noqa: BLE001 - a malformed log call must not hide the failure
            self.records.append((record.levelno, str(record.msg)))


@contextmanager
def _exporter_messages() -> Iterator[_Messages]:
    """The exporters' log records, kept instead of printed (the failure becomes one error line)."""
    logger = logging.getLogger("opentelemetry.exporter")
    handler = _Messages()
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


_ERRNO = re.compile(r"\[Errno -?\d+\][^'\"()\]]*")
_HTTP_CODE = re.compile(r"code: (\d+), reason: (.*)")
_GRPC_CODE = re.compile(r"error code: StatusCode\.(\w+), error details: (.*)")


GAVE_UP = "no answer within the timeout, retries included"
NO_REASON = "the exporter gave no reason"


def failure_reason(records: Sequence[tuple[int, str]]) -> str:
    """The exporter's reason for a failed batch, in one line, from what it logged: the final
    error, or when that only says it gave up (timeout, retries), the last transient error."""
    errors = [m for level, m in records if level >= logging.ERROR]
    transient = [m for level, m in records if level < logging.ERROR and "error" in m.lower()]
    text = errors[-1] if errors else (transient[-1] if transient else "")
    # the exporter gave up: its deadline passed, between retries or (urllib3's "timeout cannot be
    # set to ... 0") as a retry began; the last transient error, if any, says why
    if "timeout, max retries" in text or "timeout cannot be set" in text:
        if not transient:
            return GAVE_UP
        text = transient[-1]
    if m := _HTTP_CODE.search(text):
        text = f"HTTP {m.group(1)} {m.group(2)}"
    elif m := _GRPC_CODE.search(text):
        text = f"gRPC {m.group(1)}: {m.group(2)}"
    elif m := _ERRNO.search(text):
        text = m.group(0)
    text = " ".join(text.split())
    if not text:
        return NO_REASON
    return text if len(text) <= 300 else text[:299] + "…"


def _unreachable(url: str, timeout_s: float) -> str | None:
    """Why a TCP connection to the URL's host and port fails (its errno text), or None when it opens."""
    import socket

    u = urlsplit(url)
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)),
                                      timeout=min(timeout_s, 5.0)):
            return None
    except OSError as exc:
        if exc.errno is None:  # a timeout
            return f"no connection within {min(timeout_s, 5.0):g} s"
        return f"[Errno {exc.errno}] {exc.strerror}"


@dataclass(frozen=True)
class RunExport:
    """What went out for one run."""

    run_dir: Path
    run_id: str
    scenario: str
    spans: int
    spans_with_evidence: int  # spans with at least one matched kernel event
    slo_events: int
    attributions: int
    notes: tuple[str, ...] = ()

    @property
    def log_records(self) -> int:
        return self.slo_events + self.attributions

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "run_id": self.run_id, "scenario": self.scenario,
                "spans": self.spans, "spans_with_evidence": self.spans_with_evidence,
                "log_records": self.log_records, "slo_events": self.slo_events,
                "attributions": self.attributions, "notes": list(self.notes)}


@dataclass(frozen=True)
class ExportSummary:
    target: Target
    signals: tuple[str, ...]
    runs: tuple[RunExport, ...]

    spans = property(lambda self: sum(r.spans for r in self.runs))
    log_records = property(lambda self: sum(r.log_records for r in self.runs))

    def to_dict(self) -> dict:
        return {"target": self.target.to_dict(), "signals": list(self.signals), "spans": self.spans,
                "log_records": self.log_records, "runs": [r.to_dict() for r in self.runs]}


Progress = Callable[[str, str, int, int], None]  # (run, what, done, total)


def _send(exporter, batch: list, signal: str, target: Target, done: int, total: int, run: RunTelemetry) -> None:
    with _exporter_messages() as messages:
        result = exporter.export(batch)
    if getattr(result, "name", "") == "SUCCESS":
        return
    what = "spans" if signal == "traces" else "log records"
    reason = failure_reason(messages.records)
    if reason in (GAVE_UP, NO_REASON):  # the exporter kept why to itself: ask the network
        reason = _unreachable(target.url(signal), target.timeout_s) or reason
    sent = "none" if done == 0 else f"{done:,}"
    hint = (f"check --endpoint and --protocol (OTLP receivers listen for http on port 4318, grpc on 4317); "
            f"{sent} of the {total:,} {what} of run {run.run_id} went out")
    if signal == "logs":
        hint += "; a receiver of traces only (Tempo) takes no logs: pass --signal traces"
    raise ExportError(f"cannot export {what} to {target.url(signal)}: {reason}", hint)


def export_otlp(paths: Iterable[Path], target: Target, config: Mapping, model=None, *,
                budget: float | None = None, signals: Sequence[str] = SIGNALS, batch_size: int = DEFAULT_BATCH,
                progress: Progress | None = None) -> ExportSummary:
    """Sends every run below `paths` to `target`: `signals` traces (the spans with their kernel
    evidence) and logs (v1 SLO events and incident attributions), `batch_size` per export
    request. Raises ExportError at the first batch the receiver does not take."""
    from analyze.session import find_runs

    signals = tuple(s for s in SIGNALS if s in signals)
    if not signals:
        raise ConfigError("nothing to send: no signal chosen", "pass --signal traces, --signal logs, or both")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size!r} is not positive", "pass --batch-size N, e.g. 512")
    run_dirs = find_runs([Path(p) for p in paths])
    exporters = {s: target.exporter(s) for s in signals}
    done_runs = []
    try:
        for run_dir in run_dirs:
            label = run_dir.name.removeprefix("run=")
            if progress:
                progress(label, "analyzing", 0, 0)
            run = load_run(run_dir, config, model, budget=budget, documents="logs" in signals)
            builder = _Builder(run)
            n_spans = run.spans.num_rows if "traces" in signals else 0
            n_docs = len(run.documents) if "logs" in signals else 0
            # logs first: a receiver that takes no logs then fails the export before any span
            # went, and the same command with --signal traces sends each span once
            sent = 0
            if n_docs:
                for batch in builder.logs(batch_size):
                    _send(exporters["logs"], batch, "logs", target, sent, n_docs, run)
                    sent += len(batch)
                    if progress:
                        progress(label, "log records", sent, n_docs)
            sent = 0
            if n_spans:
                for batch in builder.spans(batch_size):
                    _send(exporters["traces"], batch, "traces", target, sent, n_spans, run)
                    sent += len(batch)
                    if progress:
                        progress(label, "spans", sent, n_spans)
            with_evidence = 0
            if n_spans and "matched_events" in run.spans.column_names:
                import pyarrow.compute as pc

                with_evidence = int(pc.sum(pc.greater(run.spans.column("matched_events"), 0)).as_py() or 0)
            slo = sum(1 for d in run.documents if d.event_name == EVENT_SLO) if n_docs else 0
            done_runs.append(RunExport(run_dir, run.run_id, run.scenario, n_spans, with_evidence, slo,
                                       n_docs - slo, tuple(run.notes)))
    finally:
        for exporter in exporters.values():
            with _exporter_messages():
                exporter.shutdown()
    return ExportSummary(target, signals, tuple(done_runs))
