-- correlate_matched: the correlated.parquet of a run. Kernel events matched to a span at
-- confidence >= 0.7, one row per event, at its best tier.
-- parameters: none
-- reads: corr_events, corr_best
-- columns: the corr_events columns without event_no (kernel_events columns; the event's own
--          trace context as event_trace_id, event_span_id), then trace_id, span_id (the
--          matched span), tier (trace_id | pod_pid | pod_conn), confidence (DOUBLE: 1.0, 0.9, 0.8).
--          ts_ns: wall clock ns; value_ns: ns. Ordered by ts_ns.
SELECT e.* EXCLUDE (event_no), b.trace_id, b.span_id, b.tier, b.confidence
FROM corr_events e
JOIN corr_best b ON b.event_no = e.event_no
WHERE b.enriches
ORDER BY e.ts_ns, e.event_no
