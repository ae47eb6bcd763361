-- correlate_events: step 5 of correlation. The kernel events of ONE run, or of one time slice
-- of it, numbered. analyze.correlate keeps the result as temp table corr_events; event_no
-- identifies an event through the later steps and appears in no output file.
-- A long run is correlated slice by slice (analyze/correlate.py): the slices split the events
-- by ts_ns, each event falls in exactly one, and the slice that reaches the largest timestamp
-- also takes the events without one. Numbering follows the files' row order, so within a slice
-- event_no orders events as a whole-run numbering would.
-- parameters: $ts_first, $ts_last (BIGINT, ns: the slice, both ends inclusive; the whole run is
--             -9223372036854775808 .. 9223372036854775807)
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
WHERE ts_ns BETWEEN $ts_first AND $ts_last
   OR (ts_ns IS NULL AND $ts_last = 9223372036854775807)
