-- slo_requests: the SLIs of every request the load generator recorded, one row per request.
-- A latency or throughput SLI is measured on ok requests only (a failed request counts once,
-- as an error); the error SLI on every request, dropped_by_client included (status <> 'ok').
-- parameters: none
-- reads: requests (one run)
-- columns: request_id, trace_id, phase, status, attempts,
--          scheduled_ns (wall ns), sent_ns (wall ns; null when never sent),
--          done_ns (wall ns: when the client saw the request end: sent_ns + e2e_ms;
--            scheduled_ns when it was never sent or has no e2e),
--          first_token_ns (wall ns: when the client saw the first token: sent_ns + ttft_ms;
--            done_ns without a first token),
--          ttft_ms (ms), tpot_ms (ms, the load generator's: (e2e - ttft) / (output tokens - 1)),
--          request_latency_ms (ms, = e2e_ms),
--          token_throughput_tps (output tokens / (e2e_ms / 1000), tokens/s; null without
--            tokens or time), error_rate (1.0 failed, 0.0 ok; ratio)
WITH ended AS (
    SELECT *,
           coalesce(sent_ns, scheduled_ns)
               + CASE WHEN sent_ns IS NOT NULL AND e2e_ms IS NOT NULL
                      THEN round(e2e_ms * 1e6)::BIGINT ELSE 0 END AS done_ns
    FROM requests
)
SELECT request_id,
       trace_id,
       phase,
       status,
       attempts,
       scheduled_ns,
       sent_ns,
       done_ns,
       coalesce(sent_ns + round(ttft_ms * 1e6)::BIGINT, done_ns) AS first_token_ns,
       CASE WHEN status = 'ok' THEN ttft_ms END AS ttft_ms,
       CASE WHEN status = 'ok' THEN tpot_ms END AS tpot_ms,
       CASE WHEN status = 'ok' THEN e2e_ms END AS request_latency_ms,
       CASE WHEN status = 'ok' AND e2e_ms > 0 AND output_tokens > 0
            THEN output_tokens / (e2e_ms / 1000.0) END AS token_throughput_tps,
       CASE WHEN status = 'ok' THEN 0.0 ELSE 1.0 END AS error_rate
FROM ended
ORDER BY done_ns, request_id
