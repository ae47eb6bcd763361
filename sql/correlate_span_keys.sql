-- correlate_span_keys: step 3 of correlation. One row per span of ONE run that has a start and
-- an end, with the tiers' keys as integers (correlate_dictionary.sql) and its rank among all
-- spans by the tie-break of every tier: the shortest span first, then the smallest span_id,
-- then trace_id (nulls last, as DuckDB orders them). Comparing two spans' `pref` is comparing
-- (end_ns - start_ns, span_id, trace_id); spans of equal rank carry the same ids.
-- Kept in start order, so a time slice reads few blocks.
-- parameters: none
-- reads: corr_spans, corr_dict
-- columns: pref (BIGINT, 1..n), trace_id, span_id, start_ns, end_ns (ns),
--          pod_id (k8s_pod_name), pid (process_pid), service_id (service_name),
--          node_id (k8s_node_name, else host_name), local_addr_id (client_address),
--          local_port (client_port), peer_addr_id (network_peer_address, else server_address),
--          peer_port (network_peer_port, else server_port); ids null where the text is null
SELECT
    dense_rank() OVER (ORDER BY s.end_ns - s.start_ns, s.span_id, s.trace_id) AS pref,
    s.trace_id, s.span_id, s.start_ns, s.end_ns,
    pod.id AS pod_id, s.process_pid AS pid, svc.id AS service_id, node.id AS node_id,
    loc.id AS local_addr_id, s.client_port AS local_port,
    peer.id AS peer_addr_id, coalesce(s.network_peer_port, s.server_port) AS peer_port
FROM corr_spans s
LEFT JOIN corr_dict pod ON pod.kind = 'pod' AND pod.name = s.k8s_pod_name
LEFT JOIN corr_dict svc ON svc.kind = 'service' AND svc.name = s.service_name
LEFT JOIN corr_dict node ON node.kind = 'node' AND node.name = coalesce(s.k8s_node_name, s.host_name)
LEFT JOIN corr_dict loc ON loc.kind = 'addr' AND loc.name = s.client_address
LEFT JOIN corr_dict peer ON peer.kind = 'addr' AND peer.name = coalesce(s.network_peer_address, s.server_address)
WHERE s.start_ns IS NOT NULL AND s.end_ns IS NOT NULL
ORDER BY s.start_ns
