-- correlate_span_stats: step 8 of correlation. Per span (by pref, correlate_span_keys.sql), the
-- kernel events of corr_events paired with it at confidence >= 0.7, per signal: how many, and the
-- sum and largest of their value_ns. A run correlated in time slices appends each slice's rows
-- (analyze/correlate.py), so a span may have one row per slice; correlate_enrich.sql adds them up.
-- parameters: $enrich_min (the lowest confidence that enriches a span, analyze/correlate.py)
-- reads: corr_candidates, corr_events
-- columns: pref (BIGINT), matched_events (events of any signal), retransmits, and for s in dns,
--          connect, tls, runqueue, mem_reclaim: <s>_count (BIGINT), <s>_ns_sum (HUGEINT, ns; null
--          when no such event has a value), <s>_ns_max (BIGINT, ns)
SELECT c.pref,
    count(*) AS matched_events,
    count(*) FILTER (WHERE e.signal = 'dns') AS dns_count,
    sum(e.value_ns) FILTER (WHERE e.signal = 'dns') AS dns_ns_sum,
    max(e.value_ns) FILTER (WHERE e.signal = 'dns') AS dns_ns_max,
    count(*) FILTER (WHERE e.signal = 'connect') AS connect_count,
    sum(e.value_ns) FILTER (WHERE e.signal = 'connect') AS connect_ns_sum,
    max(e.value_ns) FILTER (WHERE e.signal = 'connect') AS connect_ns_max,
    count(*) FILTER (WHERE e.signal = 'tls') AS tls_count,
    sum(e.value_ns) FILTER (WHERE e.signal = 'tls') AS tls_ns_sum,
    max(e.value_ns) FILTER (WHERE e.signal = 'tls') AS tls_ns_max,
    count(*) FILTER (WHERE e.signal = 'retransmit') AS retransmits,
    count(*) FILTER (WHERE e.signal = 'runqueue') AS runqueue_count,
    sum(e.value_ns) FILTER (WHERE e.signal = 'runqueue') AS runqueue_ns_sum,
    max(e.value_ns) FILTER (WHERE e.signal = 'runqueue') AS runqueue_ns_max,
    count(*) FILTER (WHERE e.signal = 'mem_reclaim') AS mem_reclaim_count,
    sum(e.value_ns) FILTER (WHERE e.signal = 'mem_reclaim') AS mem_reclaim_ns_sum,
    max(e.value_ns) FILTER (WHERE e.signal = 'mem_reclaim') AS mem_reclaim_ns_max
FROM corr_candidates c
JOIN corr_events e ON e.event_no = c.event_no
WHERE c.confidence >= $enrich_min
GROUP BY c.pref
