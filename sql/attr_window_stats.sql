-- attr_window_stats: raw evidence per window about the entry service (the gateway), from
-- its kernel events, its in-kernel histograms, its outgoing calls and the requests.
-- Window 0 is by convention the run's reference (baseline) period; windows may overlap.
-- Every window of attr_windows gets a row; a stat without data in a window is null.
-- parameters: none
-- reads: attr_windows (window_no, lo_ns, hi_ns: [lo, hi) wall ns), attr_pods (pod: the
--        entry service's pods), attr_calls (sql/attr_calls.sql), attr_requests (done_ns,
--        attempts, status: sql/slo_requests.sql), kernel_events, kernel_hist
-- columns: window_no, window_s (s),
--   dns_lookups, dns_stamped, dns_p50_ms, dns_p95_ms  getaddrinfo of the entry pods; only
--       trace-stamped lookups when the run has any (the requests' own), else all
--   connects, connect_p95_ms, connect_failures         kernel connects of the entry pods
--   syn_retransmits        retransmits of the entry pods in state SYN_SENT (lost SYNs)
--   egress_retransmits     retransmits of the entry pods on a tuple towards a generation peer
--                          (daddr:dport = the model provider's address:port of a gen_ai call)
--   runq_ms, runq_wakeups  run-queue delay summed over the entry pods' cgroups, and the
--                          wakeups it is spread over (kernel_hist, kind cgroup; the slices
--                          that lie wholly inside the window)
--   reclaim_ms, reclaims   direct/memcg reclaim stalls of tasks in any of the run's pods: memory
--                          runs short wherever on the request path it is (the model server's
--                          own pod, for one), and every pod's stall slows the requests
--   gen_calls, gen_429, gen_5xx, gen_errors   generation calls that started in the window (a
--                          call's connect and handshake happen at its start), by response
--                          status (errors: span status error, any cause)
--   tls_p50_ms             median TLS handshake wall time of generation calls (attr_calls.tls_ms)
--                          whose handshake overlapped no reclaim stall of the run's pods: a
--                          handshake that waited on memory is evidence of memory, not of
--                          the path (docs/attribution.md)
--   tls_under_reclaim      generation calls of the window whose handshake overlapped one
--   retrieval_calls, retrieval_ms_p50, retrieval_dns_p50_ms, retrieval_connect_p50_ms,
--   retrieval_tls_p50_ms, retrieval_server_p50_ms   the other (RAG retrieval) calls that
--                          started in the window: whole call, the lookup of their host (its own
--                          span, before the call), their connect and TLS handshake (kernel
--                          events matched to the call), and the rest = call - connect - TLS
--                          (server and transfer time); medians, ms
--   requests, retried      requests that ended in the window; those with attempts > 1
WITH w AS (
    SELECT window_no, lo_ns, hi_ns, (hi_ns - lo_ns) / 1e9 AS window_s FROM attr_windows
),
entry_events AS (
    SELECT k.ts_ns, k.signal, k.value_ns, k.detail, k.errno, k.trace_id, k.daddr, k.dport
    FROM kernel_events k
    JOIN attr_pods p ON p.pod = k.pod
),
any_stamped AS (
    SELECT coalesce(bool_or(trace_id IS NOT NULL), false) AS yes
    FROM entry_events WHERE signal = 'dns'
),
dns AS (
    SELECT ts_ns, value_ns / 1e6 AS ms, detail, trace_id IS NOT NULL AS stamped
    FROM entry_events
    WHERE signal = 'dns' AND (trace_id IS NOT NULL OR NOT (SELECT yes FROM any_stamped))
),
retrieval_hosts AS (
    SELECT DISTINCT server_address FROM attr_calls WHERE NOT generation AND server_address IS NOT NULL
),
gen_peers AS (
    SELECT DISTINCT peer_address, peer_port FROM attr_calls
    WHERE generation AND peer_address IS NOT NULL AND peer_port IS NOT NULL
),
dns_w AS (
    SELECT w.window_no,
           count(*) AS dns_lookups,
           count(*) FILTER (WHERE d.stamped) AS dns_stamped,
           quantile_cont(d.ms, 0.5) AS dns_p50_ms,
           quantile_cont(d.ms, 0.95) AS dns_p95_ms,
           quantile_cont(d.ms, 0.5) FILTER (WHERE d.detail IN (SELECT server_address FROM retrieval_hosts))
               AS retrieval_dns_p50_ms
    FROM w JOIN dns d ON d.ts_ns >= w.lo_ns AND d.ts_ns < w.hi_ns
    GROUP BY w.window_no
),
connect_w AS (
    SELECT w.window_no,
           count(*) AS connects,
           quantile_cont(e.value_ns / 1e6, 0.95) AS connect_p95_ms,
           count(*) FILTER (WHERE coalesce(e.errno, 0) <> 0) AS connect_failures
    FROM w JOIN entry_events e ON e.signal = 'connect' AND e.ts_ns >= w.lo_ns AND e.ts_ns < w.hi_ns
    GROUP BY w.window_no
),
retransmit_w AS (
    SELECT w.window_no,
           count(*) FILTER (WHERE e.detail = 'SYN_SENT') AS syn_retransmits,
           count(*) FILTER (WHERE g.peer_address IS NOT NULL) AS egress_retransmits
    FROM w
    JOIN entry_events e ON e.signal = 'retransmit' AND e.ts_ns >= w.lo_ns AND e.ts_ns < w.hi_ns
    LEFT JOIN gen_peers g ON g.peer_address = e.daddr AND g.peer_port = e.dport
    GROUP BY w.window_no
),
runq_w AS (
    SELECT w.window_no, sum(h.sum_ns) / 1e6 AS runq_ms, sum(h.count)::BIGINT AS runq_wakeups
    FROM w
    -- a slice counts only where it lies wholly inside the window: the one that straddles
    -- a fault's start would otherwise put fault-time delay into the reference period
    JOIN kernel_hist h ON h.signal = 'runqueue' AND h.kind = 'cgroup'
                      AND h.ts_ns >= w.lo_ns AND h.ts_ns + h.slice_ns <= w.hi_ns
    JOIN attr_pods p ON p.pod = h.pod
    GROUP BY w.window_no
),
reclaim_w AS (
    SELECT w.window_no, sum(e.value_ns) / 1e6 AS reclaim_ms, count(*) AS reclaims
    FROM w JOIN kernel_events e ON e.signal = 'mem_reclaim' AND e.pod IS NOT NULL
                               AND e.ts_ns >= w.lo_ns AND e.ts_ns < w.hi_ns
    GROUP BY w.window_no
),
stalls AS (
    SELECT ts_ns - value_ns AS lo_ns, ts_ns AS hi_ns
    FROM kernel_events WHERE signal = 'mem_reclaim' AND pod IS NOT NULL
),
gen_calls AS (
    SELECT c.*,
           c.tls_ms IS NOT NULL AND EXISTS (
               SELECT 1 FROM stalls s
               WHERE s.lo_ns < c.tls_start_ns + round(c.tls_ms * 1e6) AND s.hi_ns > c.tls_start_ns
           ) AS under_reclaim
    FROM attr_calls c WHERE c.generation
),
gen_w AS (
    SELECT w.window_no,
           count(*) AS gen_calls,
           count(*) FILTER (WHERE c.http_status = 429) AS gen_429,
           count(*) FILTER (WHERE c.http_status >= 500) AS gen_5xx,
           count(*) FILTER (WHERE c.error) AS gen_errors,
           quantile_cont(c.tls_ms, 0.5) FILTER (WHERE NOT c.under_reclaim) AS tls_p50_ms,
           count(*) FILTER (WHERE c.under_reclaim) AS tls_under_reclaim
    FROM w JOIN gen_calls c ON c.start_ns >= w.lo_ns AND c.start_ns < w.hi_ns
    GROUP BY w.window_no
),
retrieval_w AS (
    SELECT w.window_no,
           count(*) AS retrieval_calls,
           quantile_cont(c.duration_ms, 0.5) AS retrieval_ms_p50,
           quantile_cont(c.connect_ms, 0.5) AS retrieval_connect_p50_ms,
           quantile_cont(c.tls_ms, 0.5) AS retrieval_tls_p50_ms,
           quantile_cont(c.duration_ms - coalesce(c.connect_ms, 0) - coalesce(c.tls_ms, 0), 0.5)
               AS retrieval_server_p50_ms
    FROM w JOIN attr_calls c ON NOT c.generation AND c.start_ns >= w.lo_ns AND c.start_ns < w.hi_ns
    GROUP BY w.window_no
),
requests_w AS (
    SELECT w.window_no, count(*) AS requests, count(*) FILTER (WHERE r.attempts > 1) AS retried
    FROM w JOIN attr_requests r ON r.done_ns >= w.lo_ns AND r.done_ns < w.hi_ns
    GROUP BY w.window_no
)
SELECT w.window_no, w.window_s,
       coalesce(dns_w.dns_lookups, 0) AS dns_lookups, coalesce(dns_w.dns_stamped, 0) AS dns_stamped,
       dns_w.dns_p50_ms, dns_w.dns_p95_ms,
       coalesce(connect_w.connects, 0) AS connects, connect_w.connect_p95_ms,
       coalesce(connect_w.connect_failures, 0) AS connect_failures,
       coalesce(retransmit_w.syn_retransmits, 0) AS syn_retransmits,
       coalesce(retransmit_w.egress_retransmits, 0) AS egress_retransmits,
       coalesce(runq_w.runq_ms, 0) AS runq_ms, coalesce(runq_w.runq_wakeups, 0) AS runq_wakeups,
       coalesce(reclaim_w.reclaim_ms, 0) AS reclaim_ms, coalesce(reclaim_w.reclaims, 0) AS reclaims,
       coalesce(gen_w.gen_calls, 0) AS gen_calls, coalesce(gen_w.gen_429, 0) AS gen_429,
       coalesce(gen_w.gen_5xx, 0) AS gen_5xx, coalesce(gen_w.gen_errors, 0) AS gen_errors,
       gen_w.tls_p50_ms, coalesce(gen_w.tls_under_reclaim, 0) AS tls_under_reclaim,
       coalesce(retrieval_w.retrieval_calls, 0) AS retrieval_calls, retrieval_w.retrieval_ms_p50,
       dns_w.retrieval_dns_p50_ms, retrieval_w.retrieval_connect_p50_ms,
       retrieval_w.retrieval_tls_p50_ms, retrieval_w.retrieval_server_p50_ms,
       coalesce(requests_w.requests, 0) AS requests, coalesce(requests_w.retried, 0) AS retried
FROM w
LEFT JOIN dns_w USING (window_no)
LEFT JOIN connect_w USING (window_no)
LEFT JOIN retransmit_w USING (window_no)
LEFT JOIN runq_w USING (window_no)
LEFT JOIN reclaim_w USING (window_no)
LEFT JOIN gen_w USING (window_no)
LEFT JOIN retrieval_w USING (window_no)
LEFT JOIN requests_w USING (window_no)
ORDER BY w.window_no
