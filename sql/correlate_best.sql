-- correlate_best: step 10 of correlation. Each kernel event's one best pair with the span's ids,
-- as correlate_candidates.sql chose it (the highest confidence; among spans of that tier the
-- shortest, then the smallest span_id, then trace_id, so the choice does not depend on row
-- order). A pair enriches its span only when confidence >= 0.7 (trace_id, pod_pid, pod_conn);
-- service_node (0.65) is kept for the diagnostic unmatched view only.
-- For the readers of a whole-run pass (analyze.correlate.prepare: the OUTPUTS queries,
-- sql/attr_*.sql); a run correlated in slices takes the ids by pref in analyze/correlate.py.
-- parameters: $enrich_min (the lowest confidence that enriches a span, analyze/correlate.py)
-- reads: corr_candidates, corr_span_keys
-- columns: event_no, trace_id, span_id, tier, confidence (DOUBLE),
--          enriches (BOOLEAN: confidence >= 0.7). Events without any candidate have no row.
SELECT c.event_no, k.trace_id, k.span_id, c.tier, c.confidence, c.confidence >= $enrich_min AS enriches
FROM corr_candidates c
JOIN (SELECT DISTINCT pref, trace_id, span_id FROM corr_span_keys) k ON k.pref = c.pref
