-- correlate_enrich: the enriched_spans.parquet of a run. Every span, with aggregates of the
-- kernel events matched to it at confidence >= 0.7 (service_node pairs never count), as
-- correlate_span_totals.sql added them up. A run with many spans is written a range of start_ns
-- at a time (analyze/correlate.py narrows corr_spans to each), so the sort holds one range.
-- parameters: none
-- reads: corr_spans, corr_span_totals
-- columns: the SPANS columns, then
--   matched_events                   matched events of any signal
--   <s>_count, <s>_ms_sum, <s>_ms_max  for s in dns, connect, tls, runqueue, mem_reclaim:
--                                    events, summed and largest value_ns in milliseconds (DOUBLE)
--   retransmits                      matched retransmit events
-- Counts and sums are 0 for a span without such events, maxima null. Ordered by start_ns.
SELECT s.*,
    coalesce(m.matched_events, 0) AS matched_events,
    coalesce(m.dns_count, 0) AS dns_count,
    coalesce(m.dns_ms_sum, 0.0) AS dns_ms_sum,
    m.dns_ms_max,
    coalesce(m.connect_count, 0) AS connect_count,
    coalesce(m.connect_ms_sum, 0.0) AS connect_ms_sum,
    m.connect_ms_max,
    coalesce(m.tls_count, 0) AS tls_count,
    coalesce(m.tls_ms_sum, 0.0) AS tls_ms_sum,
    m.tls_ms_max,
    coalesce(m.retransmits, 0) AS retransmits,
    coalesce(m.runqueue_count, 0) AS runqueue_count,
    coalesce(m.runqueue_ms_sum, 0.0) AS runqueue_ms_sum,
    m.runqueue_ms_max,
    coalesce(m.mem_reclaim_count, 0) AS mem_reclaim_count,
    coalesce(m.mem_reclaim_ms_sum, 0.0) AS mem_reclaim_ms_sum,
    m.mem_reclaim_ms_max
FROM corr_spans s
LEFT JOIN corr_span_totals m ON m.trace_id = s.trace_id AND m.span_id = s.span_id
ORDER BY s.start_ns, s.trace_id, s.span_id
