-- compare_run_requests: the load generator's view of each run, one row per run.
-- parameters: $phase (VARCHAR, or NULL for every phase)
-- columns: tag, scenario, run (folder names), sent (requests sent: all but
--   dropped_by_client), ok (status ok),
--   ttft_p50_ms, ttft_p95_ms, ttft_p99_ms, tpot_p50_ms, tpot_p95_ms, tpot_p99_ms,
--   e2e_p50_ms, e2e_p95_ms, e2e_p99_ms (percentiles over ok requests, ms),
--   tokens_per_s (output tokens of ok requests per second of their end-to-end time),
--   error_rate (sent requests not ok / sent, 0..1)
SELECT
    CAST(tag AS VARCHAR) AS tag,
    CAST(scenario AS VARCHAR) AS scenario,
    CAST(run AS VARCHAR) AS run,
    count(*) FILTER (WHERE status <> 'dropped_by_client') AS sent,
    count(*) FILTER (WHERE status = 'ok') AS ok,
    quantile_cont(ttft_ms, 0.50) FILTER (WHERE status = 'ok') AS ttft_p50_ms,
    quantile_cont(ttft_ms, 0.95) FILTER (WHERE status = 'ok') AS ttft_p95_ms,
    quantile_cont(ttft_ms, 0.99) FILTER (WHERE status = 'ok') AS ttft_p99_ms,
    quantile_cont(tpot_ms, 0.50) FILTER (WHERE status = 'ok') AS tpot_p50_ms,
    quantile_cont(tpot_ms, 0.95) FILTER (WHERE status = 'ok') AS tpot_p95_ms,
    quantile_cont(tpot_ms, 0.99) FILTER (WHERE status = 'ok') AS tpot_p99_ms,
    quantile_cont(e2e_ms, 0.50) FILTER (WHERE status = 'ok') AS e2e_p50_ms,
    quantile_cont(e2e_ms, 0.95) FILTER (WHERE status = 'ok') AS e2e_p95_ms,
    quantile_cont(e2e_ms, 0.99) FILTER (WHERE status = 'ok') AS e2e_p99_ms,
    1000.0 * sum(output_tokens) FILTER (WHERE status = 'ok')
        / nullif(sum(e2e_ms) FILTER (WHERE status = 'ok'), 0) AS tokens_per_s,
    CAST(count(*) FILTER (WHERE status NOT IN ('ok', 'dropped_by_client')) AS DOUBLE)
        / nullif(count(*) FILTER (WHERE status <> 'dropped_by_client'), 0) AS error_rate
FROM requests
WHERE $phase IS NULL OR phase = $phase
GROUP BY ALL
ORDER BY ALL
