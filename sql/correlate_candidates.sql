-- correlate_candidates: step 3 of correlation. For each kernel event and each tier it meets,
-- the tier's best span: the shortest, then the smallest span_id (then trace_id). Reducing per
-- tier here keeps the table at most 4 rows per event however many spans a tier matches.
-- Tiers, as docs/architecture.md fixes them (boundaries inclusive):
--   trace_id      1.0   the event carries the span's trace_id and span_id, or only the trace_id
--                       (then the innermost span of that trace, taken as the shortest), and
--                       ts_ns lies inside [start_ns, end_ns]
--   pod_pid       0.9   same pod (event pod = span k8s_pod_name, both non-null) and
--                       pid = process_pid, within 100 ms of the span
--   pod_conn      0.8   same pod and TCP tuple in either direction: the span's local end is
--                       (client_address, client_port), its peer end is (network_peer_address
--                       or server_address, network_peer_port or server_port); within 250 ms
--   service_node  0.65  the event's pod runs the span's service (pod -> service_name, taken
--                       from the spans of this run) and event node = span k8s_node_name, or
--                       host_name when that is null; within 500 ms. Diagnostic only.
-- "Within X ms of the span": start_ns - X <= ts_ns <= end_ns + X, X = least(tier ms, $window_ms),
-- so no pair lies farther apart than the window.
-- Plan: each branch is an equi-join on the tier's keys with the time band as a join condition
-- (a hash join, never a cross join). The pod and service tiers add a 1-second time bucket to
-- the keys: a span is listed once per bucket its band touches, an event is looked up in its
-- own bucket only, so a busy pod or service does not make each event scan all its spans.
-- The bucket narrows the search; the band condition alone decides a match.
-- parameters: $window_ms (integer, milliseconds, >= 1; config correlation.window_ms);
--             $conf_<tier> (each tier's confidence, from analyze/correlate.py CONFIDENCE)
-- reads: corr_events (correlate_events.sql), corr_spans (correlate_spans.sql)
-- columns: event_no, tier (VARCHAR), confidence (DOUBLE), trace_id, span_id (the span's ids),
--          span_duration_ns (end_ns - start_ns, ns); one row per event and tier met
WITH
banded AS (  -- each span's band per tier, in ns
    SELECT *,
           start_ns - least(100, $window_ms::BIGINT) * 1000000 AS pid_lo,
           end_ns + least(100, $window_ms::BIGINT) * 1000000 AS pid_hi,
           start_ns - least(250, $window_ms::BIGINT) * 1000000 AS conn_lo,
           end_ns + least(250, $window_ms::BIGINT) * 1000000 AS conn_hi,
           start_ns - least(500, $window_ms::BIGINT) * 1000000 AS svc_lo,
           end_ns + least(500, $window_ms::BIGINT) * 1000000 AS svc_hi
    FROM corr_spans
    WHERE start_ns IS NOT NULL AND end_ns IS NOT NULL
),
pid_spans AS (
    SELECT trace_id, span_id, start_ns, end_ns, pid_lo, pid_hi, k8s_pod_name, process_pid,
           unnest(range(pid_lo // 1000000000, pid_hi // 1000000000 + 1)) AS bucket
    FROM banded
    WHERE k8s_pod_name IS NOT NULL AND process_pid IS NOT NULL
),
conn_ends AS (  -- a span's connection seen from either end: (src, dst) = (local, peer), (peer, local)
    SELECT trace_id, span_id, start_ns, end_ns, conn_lo, conn_hi, k8s_pod_name,
           client_address AS src_addr, client_port AS src_port,
           coalesce(network_peer_address, server_address) AS dst_addr,
           coalesce(network_peer_port, server_port) AS dst_port
    FROM banded
    UNION ALL
    SELECT trace_id, span_id, start_ns, end_ns, conn_lo, conn_hi, k8s_pod_name,
           coalesce(network_peer_address, server_address), coalesce(network_peer_port, server_port),
           client_address, client_port
    FROM banded
),
conn_spans AS (
    SELECT *, unnest(range(conn_lo // 1000000000, conn_hi // 1000000000 + 1)) AS bucket
    FROM conn_ends
    WHERE k8s_pod_name IS NOT NULL
      AND src_addr IS NOT NULL AND src_port IS NOT NULL AND dst_addr IS NOT NULL AND dst_port IS NOT NULL
),
pod_services AS (
    SELECT DISTINCT k8s_pod_name AS pod, service_name
    FROM corr_spans
    WHERE k8s_pod_name IS NOT NULL AND service_name IS NOT NULL
),
svc_spans AS (
    SELECT trace_id, span_id, start_ns, end_ns, svc_lo, svc_hi, service_name,
           coalesce(k8s_node_name, host_name) AS node,
           unnest(range(svc_lo // 1000000000, svc_hi // 1000000000 + 1)) AS bucket
    FROM banded
    WHERE service_name IS NOT NULL AND coalesce(k8s_node_name, host_name) IS NOT NULL
),
pairs AS (  -- every (event, span) pair that meets a tier; one branch per tier, each joining
            -- on its own keys, so the branches look alike by design
    -- trace_id, the event names its span
    SELECT e.event_no, s.trace_id, s.span_id, s.end_ns - s.start_ns AS span_duration_ns,
           'trace_id' AS tier, $conf_trace_id::DOUBLE AS confidence
    FROM corr_events e
    JOIN corr_spans s
      ON s.trace_id = e.event_trace_id AND s.span_id = e.event_span_id
     AND e.ts_ns BETWEEN s.start_ns AND s.end_ns
    UNION ALL
    -- trace_id, the event carries only the trace
    SELECT e.event_no, s.trace_id, s.span_id, s.end_ns - s.start_ns,
           'trace_id', $conf_trace_id::DOUBLE
    FROM corr_events e
    JOIN corr_spans s
      ON s.trace_id = e.event_trace_id AND e.event_span_id IS NULL
     AND e.ts_ns BETWEEN s.start_ns AND s.end_ns
    UNION ALL
    SELECT e.event_no, s.trace_id, s.span_id, s.end_ns - s.start_ns,
           'pod_pid', $conf_pod_pid::DOUBLE
    FROM corr_events e
    JOIN pid_spans s
      ON s.k8s_pod_name = e.pod AND s.process_pid = e.pid AND s.bucket = e.ts_ns // 1000000000
     AND e.ts_ns BETWEEN s.pid_lo AND s.pid_hi
    UNION ALL
    SELECT e.event_no, s.trace_id, s.span_id, s.end_ns - s.start_ns,
           'pod_conn', $conf_pod_conn::DOUBLE
    FROM corr_events e
    JOIN conn_spans s
      ON s.k8s_pod_name = e.pod AND s.bucket = e.ts_ns // 1000000000
     AND s.src_addr = e.saddr AND s.src_port = e.sport
     AND s.dst_addr = e.daddr AND s.dst_port = e.dport
     AND e.ts_ns BETWEEN s.conn_lo AND s.conn_hi
    UNION ALL
    SELECT e.event_no, s.trace_id, s.span_id, s.end_ns - s.start_ns,
           'service_node', $conf_service_node::DOUBLE
    FROM corr_events e
    JOIN pod_services p ON p.pod = e.pod
    JOIN svc_spans s
      ON s.service_name = p.service_name AND s.node = e.node AND s.bucket = e.ts_ns // 1000000000
     AND e.ts_ns BETWEEN s.svc_lo AND s.svc_hi
)
SELECT event_no, tier, confidence, best.trace_id, best.span_id, best.span_duration_ns
FROM (
    SELECT event_no, tier, any_value(confidence) AS confidence,
           arg_min({'trace_id': trace_id, 'span_id': span_id, 'span_duration_ns': span_duration_ns},
                   (span_duration_ns, span_id, trace_id)) AS best
    FROM pairs
    GROUP BY event_no, tier
)
