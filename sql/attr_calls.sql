-- attr_calls: every outgoing call of the entry service (its CLIENT spans), with the kernel
-- events correlation matched to that call: how long its connect took, whether it failed,
-- and the wall time of its TLS handshake.
-- A non-blocking handshake shows one tls row per SSL_do_handshake call (README), so the
-- handshake's wall time is first call start (ts_ns - value_ns) to last call end (ts_ns).
-- parameters: $service (VARCHAR, the entry service; sql/slo_entry_service.sql)
-- reads: spans, corr_events + corr_best (analyze.correlate.prepare on the same connection;
--        pairs of confidence >= 0.7 only)
-- columns: trace_id, span_id, name, start_ns, end_ns (wall ns), duration_ms (ms),
--          generation (BOOLEAN: a gen_ai call to the model provider; else e.g. RAG retrieval),
--          http_status (response status code, null when none came), error (span status error),
--          server_address, peer_address, peer_port, client_address, client_port,
--          connect_ms (ms, the slowest matched connect), connect_failures (matched connects
--          with errno <> 0), tls_start_ns (wall ns, when the handshake began), tls_ms (ms,
--          handshake wall time), retransmits (matched)
WITH calls AS (
    SELECT trace_id, span_id, name, start_ns, end_ns,
           duration_ns / 1e6 AS duration_ms,
           gen_ai_operation_name IS NOT NULL AS generation,
           http_response_status_code AS http_status,
           status_code = 'error' AS error,
           server_address,
           coalesce(network_peer_address, server_address) AS peer_address,
           coalesce(network_peer_port, server_port) AS peer_port,
           client_address, client_port
    FROM spans
    WHERE service_name = $service AND kind = 'client'
),
matched AS (
    SELECT b.trace_id, b.span_id, e.signal, e.ts_ns, e.value_ns, e.errno
    FROM corr_events e
    JOIN corr_best b ON b.event_no = e.event_no
    WHERE b.enriches
),
per_call AS (
    SELECT trace_id, span_id,
           max(value_ns) FILTER (WHERE signal = 'connect') / 1e6 AS connect_ms,
           count(*) FILTER (WHERE signal = 'connect' AND coalesce(errno, 0) <> 0) AS connect_failures,
           min(ts_ns - coalesce(value_ns, 0)) FILTER (WHERE signal = 'tls') AS tls_start_ns,
           (max(ts_ns) FILTER (WHERE signal = 'tls')
            - min(ts_ns - coalesce(value_ns, 0)) FILTER (WHERE signal = 'tls')) / 1e6 AS tls_ms,
           count(*) FILTER (WHERE signal = 'retransmit') AS retransmits
    FROM matched
    GROUP BY trace_id, span_id
)
SELECT c.*,
       p.connect_ms,
       coalesce(p.connect_failures, 0) AS connect_failures,
       p.tls_start_ns,
       p.tls_ms,
       coalesce(p.retransmits, 0) AS retransmits
FROM calls c
LEFT JOIN per_call p USING (trace_id, span_id)
ORDER BY c.start_ns, c.span_id
