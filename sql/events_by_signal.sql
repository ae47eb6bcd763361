-- events_by_signal: kernel events per signal with latency percentiles.
-- parameters: none
-- columns: signal, events, errors (errno <> 0), p50_ms, p95_ms, p99_ms, max_ms
--          (latencies from value_ns; null for count-like signals such as retransmit)
SELECT
    signal,
    count(*) AS events,
    count(*) FILTER (WHERE errno <> 0) AS errors,
    round(quantile_cont(value_ns, 0.50) / 1e6, 3) AS p50_ms,
    round(quantile_cont(value_ns, 0.95) / 1e6, 3) AS p95_ms,
    round(quantile_cont(value_ns, 0.99) / 1e6, 3) AS p99_ms,
    round(max(value_ns) / 1e6, 3) AS max_ms
FROM kernel_events
GROUP BY signal
ORDER BY signal
