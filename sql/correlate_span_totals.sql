-- correlate_span_totals: step 9 of correlation. Per span id (trace_id, span_id), the kernel
-- events matched to it at confidence >= 0.7 (service_node pairs never count): the rows
-- correlate_span_stats.sql left (one per time slice at most), and those of every rank that
-- carries the same ids, added up. Run once, after the last slice.
-- parameters: none
-- reads: corr_span_stats, corr_span_keys (a span's ids by pref)
-- columns: trace_id, span_id, matched_events (matched events of any signal), retransmits,
--          and for s in dns, connect, tls, runqueue, mem_reclaim: <s>_count (BIGINT),
--          <s>_ms_sum, <s>_ms_max (DOUBLE, value_ns summed and largest, in milliseconds;
--          null when no such event has a value). One row per id pair with a matched event.
SELECT k.trace_id, k.span_id,
    sum(st.matched_events)::BIGINT AS matched_events,
    sum(st.dns_count)::BIGINT AS dns_count,
    sum(st.dns_ns_sum) / 1e6 AS dns_ms_sum,
    max(st.dns_ns_max) / 1e6 AS dns_ms_max,
    sum(st.connect_count)::BIGINT AS connect_count,
    sum(st.connect_ns_sum) / 1e6 AS connect_ms_sum,
    max(st.connect_ns_max) / 1e6 AS connect_ms_max,
    sum(st.tls_count)::BIGINT AS tls_count,
    sum(st.tls_ns_sum) / 1e6 AS tls_ms_sum,
    max(st.tls_ns_max) / 1e6 AS tls_ms_max,
    sum(st.retransmits)::BIGINT AS retransmits,
    sum(st.runqueue_count)::BIGINT AS runqueue_count,
    sum(st.runqueue_ns_sum) / 1e6 AS runqueue_ms_sum,
    max(st.runqueue_ns_max) / 1e6 AS runqueue_ms_max,
    sum(st.mem_reclaim_count)::BIGINT AS mem_reclaim_count,
    sum(st.mem_reclaim_ns_sum) / 1e6 AS mem_reclaim_ms_sum,
    max(st.mem_reclaim_ns_max) / 1e6 AS mem_reclaim_ms_max
FROM corr_span_stats st
JOIN (SELECT DISTINCT pref, trace_id, span_id FROM corr_span_keys) k ON k.pref = st.pref
GROUP BY k.trace_id, k.span_id
