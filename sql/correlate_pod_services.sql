-- correlate_pod_services: step 4 of correlation. Which service each pod runs, as the spans of
-- ONE run say (every span, with or without times): the service_node tier reaches a service
-- from a kernel event's pod through this table.
-- parameters: none
-- reads: corr_spans, corr_dict
-- columns: pod_id, service_id (INTEGER, correlate_dictionary.sql); one row per pair
SELECT DISTINCT pod.id AS pod_id, svc.id AS service_id
FROM corr_spans s
JOIN corr_dict pod ON pod.kind = 'pod' AND pod.name = s.k8s_pod_name
JOIN corr_dict svc ON svc.kind = 'service' AND svc.name = s.service_name
