-- fault_phase_ttft_p95: time to first token p95 in the fault phase, per run.
-- parameters: none
-- columns: tag, scenario, run, requests (ok, fault phase), ttft_p95_ms
SELECT tag, scenario, run, count(*) AS requests, quantile_cont(ttft_ms, 0.95) AS ttft_p95_ms
FROM requests
WHERE phase = 'fault' AND status = 'ok'
GROUP BY tag, scenario, run
ORDER BY tag, scenario, run
