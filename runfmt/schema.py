"""Arrow schemas of the run directory's tables, and where each table lives in a run.

The recorder writes kernel_events, kernel_hist, spans, span_resources and
resources (and otlp_raw while it records); the lab writes requests and labels;
the analyzer reads them all.
"""

from __future__ import annotations

import pyarrow as pa

# field metadata of a column added to a table after runs were recorded without it:
# a file that lacks it is still readable (the column reads as null)
OPTIONAL = {"optional": "true"}


def is_optional(f: pa.Field) -> bool:
    return bool(f.metadata) and f.metadata.get(b"optional") == b"true"


KERNEL_EVENTS = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),  # wall clock, ns since the epoch
    pa.field("signal", pa.string(), nullable=False),
    pa.field("pid", pa.int32()),
    pa.field("tid", pa.int32()),
    pa.field("comm", pa.string()),
    pa.field("cgroup_id", pa.uint64()),
    pa.field("pod", pa.string()),
    pa.field("namespace", pa.string()),
    pa.field("container", pa.string()),
    pa.field("node", pa.string()),
    pa.field("saddr", pa.string()),
    pa.field("daddr", pa.string()),
    pa.field("sport", pa.int32()),
    pa.field("dport", pa.int32()),
    pa.field("family", pa.int32()),
    pa.field("value_ns", pa.int64()),  # latency; null for count-like signals
    pa.field("detail", pa.string()),  # DNS name, TCP state ...
    pa.field("errno", pa.int32()),  # connect: sk_err; dns: getaddrinfo's EAI code
    pa.field("trace_id", pa.string()),
    pa.field("span_id", pa.string()),
])

# in-kernel aggregates per time slice (runqueue delay, cpu steal)
KERNEL_HIST = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),  # slice start, wall clock
    pa.field("slice_ns", pa.int64(), nullable=False),
    pa.field("signal", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # pid | cgroup | cpu
    pa.field("pid", pa.int32()),
    pa.field("cgroup_id", pa.uint64()),
    pa.field("cpu", pa.int32()),
    pa.field("pod", pa.string()),
    pa.field("namespace", pa.string()),
    pa.field("container", pa.string()),
    pa.field("node", pa.string()),
    pa.field("count", pa.int64()),
    pa.field("sum_ns", pa.int64()),
    pa.field("max_ns", pa.int64()),
    # log2 buckets of µs: buckets[i] counts [2^i, 2^(i+1)) µs, buckets[0] also < 1 µs
    pa.field("buckets", pa.list_(pa.int64())),
])

# the load generator's view, one row per request (replay/loadgen.py)
REQUESTS = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("phase", pa.string()),
    pa.field("prompt_class", pa.string(), nullable=False),
    pa.field("scheduled_ns", pa.int64(), nullable=False),  # wall clock, ns since the epoch
    pa.field("sent_ns", pa.int64()),  # wall clock; null when dropped by the client
    pa.field("ttft_ms", pa.float64()),
    pa.field("tpot_ms", pa.float64()),
    pa.field("itl_ms", pa.list_(pa.float64())),
    pa.field("e2e_ms", pa.float64()),
    pa.field("output_tokens", pa.int32()),
    pa.field("status", pa.string(), nullable=False),  # ok | http_<code> | timeout | error | dropped_by_client
    pa.field("http_status", pa.int32()),
    pa.field("error", pa.string()),
    pa.field("trace_id", pa.string()),  # 32 hex digits, the client span's
    pa.field("attempts", pa.int32()),  # gateway's x-lab-attempts header
])

# ground truth of a lab run: which fault was injected where, and when
LABELS = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("scenario", pa.string(), nullable=False),
    pa.field("domain", pa.string(), nullable=False),  # v1 fault domain
    pa.field("target", pa.string()),  # the lab service the fault was injected into
    pa.field("intensity", pa.string()),  # the scenario's parameters, as a JSON object (slocap lab list)
    pa.field("start_ns", pa.int64(), nullable=False),  # wall clock, before inject() was called
    pa.field("end_ns", pa.int64(), nullable=False),  # after clear() returned
])

# what the recorder takes from OTLP spans, flattened (capture/spans.py)
SPANS = pa.schema([
    pa.field("trace_id", pa.string(), nullable=False),  # 32 lower-case hex digits
    pa.field("span_id", pa.string(), nullable=False),  # 16 lower-case hex digits
    pa.field("parent_span_id", pa.string()),  # null for a root span
    pa.field("name", pa.string()),
    pa.field("kind", pa.string()),  # internal/server/client/producer/consumer/unspecified
    pa.field("start_ns", pa.int64()),  # wall clock, ns since the epoch
    pa.field("end_ns", pa.int64()),
    pa.field("duration_ns", pa.int64()),
    pa.field("status_code", pa.string()),  # unset/ok/error
    pa.field("status_message", pa.string()),
    pa.field("service_name", pa.string()),
    pa.field("host_name", pa.string()),
    pa.field("process_pid", pa.int64()),
    pa.field("thread_id", pa.int64()),  # thread.id: the runtime's id, not always the kernel tid
    pa.field("k8s_pod_name", pa.string()),
    pa.field("k8s_namespace_name", pa.string()),
    pa.field("k8s_container_name", pa.string()),
    pa.field("k8s_node_name", pa.string()),
    pa.field("k8s_pod_uid", pa.string()),
    pa.field("gen_ai_provider_name", pa.string()),
    pa.field("gen_ai_operation_name", pa.string()),
    pa.field("gen_ai_request_model", pa.string()),
    pa.field("gen_ai_response_model", pa.string()),
    pa.field("gen_ai_usage_input_tokens", pa.int64()),
    pa.field("gen_ai_usage_output_tokens", pa.int64()),
    pa.field("gen_ai_server_time_to_first_token", pa.float64()),  # seconds, measured by the server
    pa.field("gen_ai_response_time_to_first_chunk", pa.float64()),  # seconds, measured by the client
    pa.field("server_address", pa.string()),
    pa.field("server_port", pa.int64()),
    pa.field("network_peer_address", pa.string()),
    pa.field("network_peer_port", pa.int64()),
    pa.field("client_address", pa.string()),
    pa.field("client_port", pa.int64()),
    pa.field("url_full", pa.string()),
    pa.field("http_request_method", pa.string()),
    pa.field("http_response_status_code", pa.int64()),
    pa.field("scope_name", pa.string()),
    pa.field("attributes", pa.map_(pa.string(), pa.string())),  # span attributes without a column
    pa.field("resource_id", pa.string(), metadata=OPTIONAL),  # its resource's row in SPAN_RESOURCES
])

# the other attributes of the spans' resources, once per resource and export request
# (capture/spans.py); keys as `resource.<key>`, so map_concat(spans.attributes,
# span_resources.attributes) holds every attribute a span came with
SPAN_RESOURCES = pa.schema([
    pa.field("resource_id", pa.string(), nullable=False),  # 16 random hex digits
    pa.field("attributes", pa.map_(pa.string(), pa.string())),
])

# OTLP export requests as received (capture/otlp.py), one row each, kept while recording;
# when the recording ends they are flattened into spans and span_resources and their parts
# removed (capture/span_flatten.py). Only a cut run (or one whose flattening failed) still
# holds them, until `slocap repair` flattens them: its manifest says otlp.spans_state "raw"
OTLP_RAW = pa.schema([
    pa.field("arrival_ns", pa.int64(), nullable=False),  # wall clock, ns since the epoch
    pa.field("protocol", pa.string(), nullable=False),  # http | grpc
    pa.field("content_type", pa.string(), nullable=False),  # application/x-protobuf | application/json
    pa.field("body", pa.binary(), nullable=False),  # the ExportTraceServiceRequest, Content-Encoding undone
])

# the recorder's own CPU and memory, sampled while it records (overhead)
RESOURCES = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("interval_s", pa.float64()),
    pa.field("cpu_user_s", pa.float64()),
    pa.field("cpu_sys_s", pa.float64()),
    pa.field("bpf_run_ns", pa.int64()),
    pa.field("bpf_runs", pa.int64()),
    pa.field("rss_bytes", pa.int64()),
    pa.field("events", pa.int64()),
    pa.field("overhead_pct", pa.float64()),  # of the whole machine
    pa.field("shed_level", pa.int32()),  # probe shedding steps taken
    # added later, so older runs lack them (OPTIONAL): the overhead split by cause
    # (capture/safety.py) and what span intake refused with backpressure
    pa.field("intake_cpu_s", pa.float64(), metadata=OPTIONAL),  # receiver request handling + span parts
    pa.field("kernel_cpu_s", pa.float64(), metadata=OPTIONAL),  # main loop: drain, convert, kernel tables
    pa.field("intake_overhead_pct", pa.float64(), metadata=OPTIONAL),
    pa.field("kernel_overhead_pct", pa.float64(), metadata=OPTIONAL),  # with BPF run time
    pa.field("spans_refused", pa.int64(), metadata=OPTIONAL),  # in protobuf requests; JSON ones uncounted
    pa.field("requests_refused", pa.int64(), metadata=OPTIONAL),
    pa.field("intake_level", pa.int32(), metadata=OPTIONAL),  # admitting 1 export request in 2**level
])

# table (and the analyzer's view) -> (schema, the files of one run directory that hold it)
TABLES = {
    "kernel_events": (KERNEL_EVENTS, "kernel_events/part-*.parquet"),
    "kernel_hist": (KERNEL_HIST, "kernel_hist/part-*.parquet"),
    "spans": (SPANS, "spans/part-*.parquet"),
    "span_resources": (SPAN_RESOURCES, "span_resources/part-*.parquet"),
    "otlp_raw": (OTLP_RAW, "otlp_raw/part-*.parquet"),
    "requests": (REQUESTS, "requests/part-*.parquet"),
    "resources": (RESOURCES, "resources/part-*.parquet"),
    "labels": (LABELS, "labels.parquet"),
}
