-- correlate_events: step 1 of correlation. The kernel events of ONE run, numbered.
-- analyze.correlate keeps the result as temp table corr_events; event_no identifies an
-- event through the later steps and appears in no output file.
-- parameters: none
-- reads: kernel_events (the views of one run; correlation never pairs across runs)
-- columns: event_no (BIGINT, 1..n), then the kernel_events columns in schema order
--          (ts_ns: wall clock, ns since the epoch; value_ns: ns), with the event's own
--          trace context renamed event_trace_id, event_span_id (trace_id and span_id
--          name the matched span in the outputs). Partition columns (tag, scenario, run)
--          are left out.
SELECT
    row_number() OVER () AS event_no,
    ts_ns, signal, pid, tid, comm, cgroup_id, pod, namespace, container, node,
    saddr, daddr, sport, dport, family, value_ns, detail, errno,
    trace_id AS event_trace_id,
    span_id AS event_span_id
FROM kernel_events
