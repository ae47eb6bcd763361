-- correlate_event_keys: step 6 of correlation. What the pod and service tiers compare of each
-- event of corr_events, all as integers: its time and 1-second bucket, its pod, node and TCP
-- addresses as numbered by correlate_dictionary.sql (null when no span names them), pid and
-- ports. Events without a timestamp meet no tier and are left out. (The trace_id tier reads
-- the event's own trace context from corr_events.)
-- parameters: none
-- reads: corr_events, corr_dict
-- columns: event_no, ts_ns (ns), bucket (ts_ns // 1e9), pod_id, pid (BIGINT), node_id,
--          saddr_id, sport (BIGINT), daddr_id, dport (BIGINT)
SELECT e.event_no, e.ts_ns, e.ts_ns // 1000000000 AS bucket,
       pod.id AS pod_id, e.pid::BIGINT AS pid, node.id AS node_id,
       src.id AS saddr_id, e.sport::BIGINT AS sport, dst.id AS daddr_id, e.dport::BIGINT AS dport
FROM corr_events e
LEFT JOIN corr_dict pod ON pod.kind = 'pod' AND pod.name = e.pod
LEFT JOIN corr_dict node ON node.kind = 'node' AND node.name = e.node
LEFT JOIN corr_dict src ON src.kind = 'addr' AND src.name = e.saddr
LEFT JOIN corr_dict dst ON dst.kind = 'addr' AND dst.name = e.daddr
WHERE e.ts_ns IS NOT NULL
