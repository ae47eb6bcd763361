-- correlate_unmatched: the unmatched.parquet of a run, a diagnostic view. Kernel events
-- without a match of confidence >= 0.7, with their best diagnostic candidate if any.
-- Together with correlate_matched it holds every event exactly once.
-- parameters: none
-- reads: corr_events, corr_best
-- columns: as correlate_matched; trace_id, span_id, tier, confidence name the candidate
--          (tier service_node, confidence 0.65) or are null when the event has none.
SELECT e.* EXCLUDE (event_no), b.trace_id, b.span_id, b.tier, b.confidence
FROM corr_events e
LEFT JOIN corr_best b ON b.event_no = e.event_no
WHERE b.enriches IS NOT TRUE
ORDER BY e.ts_ns, e.event_no
