-- correlate_candidates: step 7 of correlation. Each kernel event's best pair: its best tier and,
-- within that tier, the best span, named by its pref (correlate_span_keys.sql: the lowest is the
-- shortest, then the smallest span_id, then trace_id). The tiers cascade: an event paired at a
-- tier does not enter the tiers below it, so most events meet one or two joins, not four.
-- Everything here is an integer but the trace and span ids the trace_id tier compares.
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
-- Plan: every tier is an equi-join on the tier's keys with the time band as a join condition
-- (a hash join, never a cross join). Pods, nodes, services and addresses are compared as the
-- integers of correlate_dictionary.sql; trace and span ids are compared once, in the trace_id
-- tier. The pod and service tiers add a 1-second time bucket to the keys: a span is listed once
-- per bucket its band touches inside the slice, an event is looked up in its own bucket only,
-- so a busy pod or service does not make each event scan all its spans. The bucket narrows the
-- search; the band condition alone decides a match. (An ASOF join on start_ns would see one span
-- per key, the last to start before the event; but spans of a key overlap, nested or concurrent,
-- and the shortest of those whose band holds the event must win, so every one of them is weighed.)
-- Slices: only spans whose band reaches into [$ts_first, $ts_last] take part, and a span's
-- buckets stop at the slice's edges. An event of the slice therefore meets every span it would
-- meet in a whole-run pass: the slices overlap on the spans' side, never on the events'.
-- parameters: $window_ms (integer, milliseconds, >= 1; config correlation.window_ms);
--             $conf_<tier> (each tier's confidence, from analyze/correlate.py CONFIDENCE);
--             $ts_first, $ts_last (BIGINT ns, the slice as in correlate_events.sql)
-- reads: corr_events, corr_event_keys, corr_span_keys, corr_pod_services
-- columns: event_no, tier (VARCHAR), confidence (DOUBLE), pref (BIGINT: the span, as ranked in
--          corr_span_keys); one row per event paired at some tier, none for the others
WITH
live AS MATERIALIZED (  -- the spans whose widest band reaches into the slice
    SELECT *
    FROM corr_span_keys
    WHERE start_ns - least(500, $window_ms::BIGINT) * 1000000 <= $ts_last
      AND end_ns + least(500, $window_ms::BIGINT) * 1000000 >= $ts_first
),
-- trace_id: the event names its span, or only its trace
trace_pairs AS (
    SELECT e.event_no, s.pref
    FROM corr_events e
    JOIN live s
      ON s.trace_id = e.event_trace_id AND s.span_id = e.event_span_id
     AND e.ts_ns BETWEEN s.start_ns AND s.end_ns
    UNION ALL
    SELECT e.event_no, s.pref
    FROM corr_events e
    JOIN live s
      ON s.trace_id = e.event_trace_id AND e.event_span_id IS NULL
     AND e.ts_ns BETWEEN s.start_ns AND s.end_ns
),
trace_hits AS MATERIALIZED (
    SELECT event_no, min(pref) AS pref
    FROM trace_pairs
    GROUP BY event_no
),
after_trace AS MATERIALIZED (  -- every pod tier needs a pod some span names
    SELECT e.*
    FROM corr_event_keys e
    ANTI JOIN trace_hits h ON h.event_no = e.event_no
    WHERE e.pod_id IS NOT NULL
),
-- pod_pid
pid_spans AS (
    SELECT pod_id, pid, pref, lo, hi,
           unnest(range(greatest(lo, $ts_first) // 1000000000, least(hi, $ts_last) // 1000000000 + 1)) AS bucket
    FROM (SELECT *,
                 start_ns - least(100, $window_ms::BIGINT) * 1000000 AS lo,
                 end_ns + least(100, $window_ms::BIGINT) * 1000000 AS hi
          FROM live
          WHERE pod_id IS NOT NULL AND pid IS NOT NULL)
    WHERE lo <= $ts_last AND hi >= $ts_first
),
pid_hits AS MATERIALIZED (
    SELECT e.event_no, min(s.pref) AS pref
    FROM after_trace e
    JOIN pid_spans s
      ON s.pod_id = e.pod_id AND s.pid = e.pid AND s.bucket = e.bucket
     AND e.ts_ns BETWEEN s.lo AND s.hi
    GROUP BY e.event_no
),
after_pid AS MATERIALIZED (
    SELECT e.*
    FROM after_trace e
    ANTI JOIN pid_hits h ON h.event_no = e.event_no
),
-- pod_conn: the event's whole tuple; a span's connection seen from either end: (src, dst) = (local, peer), (peer, local)
conn_events AS (
    SELECT event_no, ts_ns, bucket, pod_id, saddr_id AS src_addr_id, sport AS src_port,
           daddr_id AS dst_addr_id, dport AS dst_port
    FROM after_pid
    WHERE saddr_id IS NOT NULL AND sport IS NOT NULL AND daddr_id IS NOT NULL AND dport IS NOT NULL
),
conn_ends AS (
    SELECT pref, start_ns, end_ns, pod_id,
           local_addr_id AS src_addr_id, local_port AS src_port, peer_addr_id AS dst_addr_id, peer_port AS dst_port
    FROM live
    UNION ALL
    SELECT pref, start_ns, end_ns, pod_id, peer_addr_id, peer_port, local_addr_id, local_port
    FROM live
),
conn_spans AS (
    SELECT *,
           unnest(range(greatest(lo, $ts_first) // 1000000000, least(hi, $ts_last) // 1000000000 + 1)) AS bucket
    FROM (SELECT *,
                 start_ns - least(250, $window_ms::BIGINT) * 1000000 AS lo,
                 end_ns + least(250, $window_ms::BIGINT) * 1000000 AS hi
          FROM conn_ends
          WHERE pod_id IS NOT NULL AND src_addr_id IS NOT NULL AND src_port IS NOT NULL
            AND dst_addr_id IS NOT NULL AND dst_port IS NOT NULL)
    WHERE lo <= $ts_last AND hi >= $ts_first
),
conn_hits AS MATERIALIZED (
    SELECT e.event_no, min(s.pref) AS pref
    FROM conn_events e
    JOIN conn_spans s
      ON s.pod_id = e.pod_id AND s.bucket = e.bucket
     AND s.src_addr_id = e.src_addr_id AND s.src_port = e.src_port
     AND s.dst_addr_id = e.dst_addr_id AND s.dst_port = e.dst_port
     AND e.ts_ns BETWEEN s.lo AND s.hi
    GROUP BY e.event_no
),
after_conn AS MATERIALIZED (
    SELECT e.*
    FROM after_pid e
    ANTI JOIN conn_hits h ON h.event_no = e.event_no
    WHERE e.node_id IS NOT NULL
),
-- service_node: the event's pod -> its services, then service + node
svc_spans AS (
    SELECT service_id, node_id, pref, lo, hi,
           unnest(range(greatest(lo, $ts_first) // 1000000000, least(hi, $ts_last) // 1000000000 + 1)) AS bucket
    FROM (SELECT *,
                 start_ns - least(500, $window_ms::BIGINT) * 1000000 AS lo,
                 end_ns + least(500, $window_ms::BIGINT) * 1000000 AS hi
          FROM live
          WHERE service_id IS NOT NULL AND node_id IS NOT NULL)
    WHERE lo <= $ts_last AND hi >= $ts_first
),
svc_events AS MATERIALIZED (  -- first the services of each event's pod, so the span join has all its keys
    SELECT e.event_no, e.ts_ns, e.bucket, e.node_id, p.service_id
    FROM after_conn e
    JOIN corr_pod_services p ON p.pod_id = e.pod_id
),
svc_hits AS (
    SELECT e.event_no, min(s.pref) AS pref
    FROM svc_events e
    JOIN svc_spans s
      ON s.service_id = e.service_id AND s.node_id = e.node_id AND s.bucket = e.bucket
     AND e.ts_ns BETWEEN s.lo AND s.hi
    GROUP BY e.event_no
)
SELECT event_no, 'trace_id' AS tier, $conf_trace_id::DOUBLE AS confidence, pref
FROM trace_hits
UNION ALL
SELECT event_no, 'pod_pid', $conf_pod_pid::DOUBLE, pref
FROM pid_hits
UNION ALL
SELECT event_no, 'pod_conn', $conf_pod_conn::DOUBLE, pref
FROM conn_hits
UNION ALL
SELECT event_no, 'service_node', $conf_service_node::DOUBLE, pref
FROM svc_hits
