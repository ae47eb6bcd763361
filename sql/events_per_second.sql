-- events_per_second: how the kernel events of the views spread over time, one row per second
-- (ts_ns // 1e9). analyze/correlate.py cuts a long run into time slices of about the same
-- number of events from it; the row with a null second counts the events without ts_ns.
-- parameters: none
-- reads: kernel_events
-- columns: second (BIGINT, ts_ns // 1e9), events (BIGINT), first_ns, last_ns (BIGINT, the
--          smallest and largest ts_ns of that second); ordered by second, the null one last
SELECT ts_ns // 1000000000 AS second, count(*) AS events, min(ts_ns) AS first_ns, max(ts_ns) AS last_ns
FROM kernel_events
GROUP BY ALL
ORDER BY second NULLS LAST
