-- slo_entry_service: the service that served the recorded requests, and where it ran.
-- Its spans are the root-most SERVER spans of the requests' traces: SERVER spans of a trace
-- the load generator recorded whose parent is not a span of this run (the client's span
-- lives in the load generator, which exports none). One row per pod of that service.
-- parameters: none
-- reads: spans, requests (one run)
-- columns: service_name, namespace (k8s.namespace.name), pod (k8s.pod.name),
--          node (k8s.node.name, else host.name), spans (how many such spans; rows ordered
--          by service total, then pod)
WITH traced AS (
    SELECT DISTINCT trace_id FROM requests WHERE trace_id IS NOT NULL
),
entry AS (
    SELECT s.service_name, s.k8s_namespace_name, s.k8s_pod_name,
           coalesce(s.k8s_node_name, s.host_name) AS node
    FROM spans s
    JOIN traced t ON t.trace_id = s.trace_id
    LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
    WHERE s.kind = 'server' AND s.service_name IS NOT NULL AND p.span_id IS NULL
)
SELECT service_name, namespace, pod, node, spans
FROM (
    SELECT service_name,
           k8s_namespace_name AS namespace,
           k8s_pod_name AS pod,
           node,
           count(*) AS spans,
           sum(count(*)) OVER (PARTITION BY service_name) AS service_spans
    FROM entry
    GROUP BY service_name, k8s_namespace_name, k8s_pod_name, node
)
ORDER BY service_spans DESC, service_name, pod
