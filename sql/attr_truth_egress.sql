-- attr_truth_egress: ground truth for correlation scoring in a run with an injected network
-- egress fault (packets to the model provider dropped). The lab's gateway opens a new TCP
-- connection for every generation attempt, inside that attempt's CLIENT span, and closes it
-- when the span ends (replay/gateway.py, _attempt). A retransmit of the gateway on the
-- tuple (local address:port -> provider address:port) therefore belongs to the latest
-- generation span with that tuple that started before it: the connection's owner, known
-- from the tuple and the connection's life, not from the tiers' time bands. Every such
-- retransmit inside the fault window is a truth pair.
-- parameters: $service (entry service), $lo_ns, $hi_ns (fault window, wall ns)
-- reads: spans, corr_events, corr_best, attr_pods (the entry service's pods)
-- columns: event_no, trace_id, span_id (the owner span), matched_trace_id, matched_span_id,
--          tier (what correlation paired the event with at confidence >= 0.7, null when nothing)
WITH owners AS (
    SELECT trace_id, span_id, start_ns, client_address, client_port,
           coalesce(network_peer_address, server_address) AS peer_address,
           coalesce(network_peer_port, server_port) AS peer_port
    FROM spans
    WHERE service_name = $service AND kind = 'client' AND gen_ai_operation_name IS NOT NULL
      AND client_address IS NOT NULL AND client_port IS NOT NULL
),
retransmits AS (
    SELECT e.event_no, e.ts_ns, e.saddr, e.sport, e.daddr, e.dport
    FROM corr_events e
    JOIN attr_pods p ON p.pod = e.pod
    WHERE e.signal = 'retransmit' AND e.ts_ns >= $lo_ns AND e.ts_ns < $hi_ns
),
owned AS (
    SELECT r.event_no, o.trace_id, o.span_id,
           row_number() OVER (PARTITION BY r.event_no ORDER BY o.start_ns DESC, o.span_id) AS latest
    FROM retransmits r
    JOIN owners o
      ON o.client_address = r.saddr AND o.client_port = r.sport
     AND o.peer_address = r.daddr AND o.peer_port = r.dport
     AND o.start_ns <= r.ts_ns
)
SELECT o.event_no, o.trace_id, o.span_id,
       b.trace_id AS matched_trace_id, b.span_id AS matched_span_id, b.tier
FROM owned o
LEFT JOIN corr_best b ON b.event_no = o.event_no AND b.enriches
WHERE o.latest = 1
ORDER BY o.event_no
