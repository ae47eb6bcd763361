-- correlate_best: step 4 of correlation. Each kernel event's one best pair.
-- The highest confidence wins; among spans of that tier the shortest, then the smallest
-- span_id (then trace_id), so the choice does not depend on row order. A pair enriches
-- its span only when confidence >= 0.7 (trace_id, pod_pid, pod_conn); service_node (0.65)
-- is kept for the diagnostic unmatched view only.
-- parameters: $enrich_min (the lowest confidence that enriches a span, analyze/correlate.py)
-- reads: corr_candidates (correlate_candidates.sql)
-- columns: event_no, trace_id, span_id, tier, confidence (DOUBLE),
--          enriches (BOOLEAN: confidence >= 0.7). Events without any candidate have no row.
SELECT event_no, best.trace_id, best.span_id, best.tier, best.confidence,
       best.confidence >= $enrich_min AS enriches
FROM (
    SELECT event_no,
           arg_min({'trace_id': trace_id, 'span_id': span_id, 'tier': tier, 'confidence': confidence},
                   (-confidence, span_duration_ns, span_id, trace_id)) AS best
    FROM corr_candidates
    GROUP BY event_no
)
