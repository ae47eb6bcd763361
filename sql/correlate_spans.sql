-- correlate_spans: step 1 of correlation. The spans of ONE run with their SPANS columns only.
-- analyze.correlate keeps it as temp view corr_spans (the spans are read where needed:
-- correlate_dictionary, correlate_span_keys, correlate_pod_services and the enriched output).
-- parameters: none
-- reads: spans (the views of one run)
-- columns: the capture.spans.SPANS columns in schema order (start_ns, end_ns, duration_ns:
--          wall clock / ns), without partition columns (tag, scenario, run). A test pins
--          this list to SPANS.
SELECT
    trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, duration_ns,
    status_code, status_message, service_name, host_name, process_pid, thread_id,
    k8s_pod_name, k8s_namespace_name, k8s_container_name, k8s_node_name, k8s_pod_uid,
    gen_ai_provider_name, gen_ai_operation_name, gen_ai_request_model, gen_ai_response_model,
    gen_ai_usage_input_tokens, gen_ai_usage_output_tokens,
    gen_ai_server_time_to_first_token, gen_ai_response_time_to_first_chunk,
    server_address, server_port, network_peer_address, network_peer_port,
    client_address, client_port, url_full, http_request_method, http_response_status_code,
    scope_name, attributes, resource_id
FROM spans
