-- attr_truth_dns: ground truth for correlation scoring in a run with an injected DNS fault.
-- The lab's gateway resolves each upstream name with libc getaddrinfo inside an INTERNAL
-- span that carries server.address (replay/gateway.py, _resolve), on the request's own
-- thread. So the getaddrinfo behind such a span is known without the trace stamp: the
-- entry service's dns event of the same process and thread (kernel tid = the span's
-- thread.id), for the same name, whose call [ts_ns - value_ns, ts_ns] overlaps the span
-- (5 ms of slack for the two clocks). Every such span that started inside the fault window
-- is a truth pair; the scoring then checks what correlation paired that event with.
-- parameters: $service (entry service), $lo_ns, $hi_ns (fault window, wall ns)
-- reads: spans, corr_events, corr_best (analyze.correlate.prepare on the same connection)
-- columns: trace_id, span_id (the resolve span), event_no (its true dns event, null when
--          the probe recorded none), matched_trace_id, matched_span_id, tier (what
--          correlation paired the event with at confidence >= 0.7; null when nothing)
WITH resolves AS (
    SELECT trace_id, span_id, start_ns, end_ns, process_pid, thread_id, server_address
    FROM spans
    WHERE service_name = $service AND kind = 'internal' AND server_address IS NOT NULL
      AND start_ns >= $lo_ns AND start_ns < $hi_ns
),
candidates AS (
    SELECT r.trace_id, r.span_id, e.event_no,
           row_number() OVER (PARTITION BY r.trace_id, r.span_id
                              ORDER BY abs(e.ts_ns - r.end_ns), e.event_no) AS nearest
    FROM resolves r
    JOIN corr_events e
      ON e.signal = 'dns' AND e.pid = r.process_pid AND e.tid = r.thread_id
     AND e.detail = r.server_address
     AND e.ts_ns - coalesce(e.value_ns, 0) <= r.end_ns + 5000000
     AND e.ts_ns >= r.start_ns - 5000000
)
SELECT r.trace_id, r.span_id, c.event_no,
       b.trace_id AS matched_trace_id, b.span_id AS matched_span_id, b.tier
FROM resolves r
LEFT JOIN candidates c ON c.trace_id = r.trace_id AND c.span_id = r.span_id AND c.nearest = 1
LEFT JOIN corr_best b ON b.event_no = c.event_no AND b.enriches
ORDER BY r.start_ns, r.span_id
