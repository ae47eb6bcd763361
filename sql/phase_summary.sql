-- phase_summary: what the client saw and what the kernel saw, per run and phase.
-- parameters: none
-- columns: scenario, run, phase, requests, ttft_p95_ms (ok requests), errors,
--          gateway_dns_p95_ms, gateway_connect_p95_ms, gateway_tls_p95_ms (kernel rows of the
--          gateway pod in the phase's time span), retransmits (all lab pods), runqueue_p95_ms
WITH phases AS (
    SELECT scenario, run, phase, min(sent_ns) AS t0, max(sent_ns) AS t1
    FROM requests WHERE sent_ns IS NOT NULL GROUP BY ALL
), req AS (
    SELECT scenario, run, phase, count(*) AS requests,
           quantile_cont(ttft_ms, 0.95) FILTER (WHERE status = 'ok') AS ttft_p95_ms,
           count(*) FILTER (WHERE status <> 'ok') AS errors
    FROM requests GROUP BY ALL
), k AS (
    SELECT p.run, p.phase,
           quantile_cont(k.value_ns, 0.95) FILTER (WHERE k.signal = 'dns' AND k.pod LIKE 'gateway-%') / 1e6 AS dns,
           quantile_cont(k.value_ns, 0.95) FILTER (WHERE k.signal = 'connect' AND k.pod LIKE 'gateway-%') / 1e6 AS con,
           quantile_cont(k.value_ns, 0.95) FILTER (WHERE k.signal = 'tls' AND k.pod LIKE 'gateway-%') / 1e6 AS tls,
           count(*) FILTER (WHERE k.signal = 'retransmit') AS retransmits,
           quantile_cont(k.value_ns, 0.95) FILTER (WHERE k.signal = 'runqueue') / 1e6 AS rq
    FROM kernel_events k JOIN phases p ON k.run = p.run AND k.ts_ns BETWEEN p.t0 AND p.t1
    GROUP BY ALL
)
SELECT req.scenario, req.run, req.phase, req.requests, round(req.ttft_p95_ms, 1) AS ttft_p95_ms, req.errors,
       round(k.dns, 2) AS gateway_dns_p95_ms, round(k.con, 2) AS gateway_connect_p95_ms,
       round(k.tls, 2) AS gateway_tls_p95_ms, k.retransmits, round(k.rq, 2) AS runqueue_p95_ms
FROM req LEFT JOIN k ON req.run = k.run AND req.phase = k.phase
ORDER BY req.scenario, req.run, CASE req.phase WHEN 'baseline' THEN 0 WHEN 'fault' THEN 1 ELSE 2 END
