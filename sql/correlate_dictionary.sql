-- correlate_dictionary: step 2 of correlation. Every pod, node, address and service name the
-- spans of ONE run carry, numbered once per run, so that the tiers join on integers instead of
-- text. The numbers are dense ranks (1..n per kind, in text order): unlike a hash of the text,
-- two names never share a number. A kernel event whose name is not listed here cannot meet a
-- tier that compares it, as no span carries that name.
-- parameters: none
-- reads: corr_spans (correlate_spans.sql)
-- columns: kind (VARCHAR: pod | node | addr | service), name (VARCHAR, never null),
--          id (INTEGER, 1..n within its kind)
--   pod      k8s_pod_name
--   node     coalesce(k8s_node_name, host_name): the node the service_node tier compares
--   addr     client_address, network_peer_address, server_address: the pod_conn tuple's ends
--   service  service_name
SELECT kind, name, dense_rank() OVER (PARTITION BY kind ORDER BY name)::INTEGER AS id
FROM (
    SELECT 'pod' AS kind, k8s_pod_name AS name FROM corr_spans
    UNION
    SELECT 'node', coalesce(k8s_node_name, host_name) FROM corr_spans
    UNION
    SELECT 'addr', client_address FROM corr_spans
    UNION
    SELECT 'addr', network_peer_address FROM corr_spans
    UNION
    SELECT 'addr', server_address FROM corr_spans
    UNION
    SELECT 'service', service_name FROM corr_spans
)
WHERE name IS NOT NULL
