// SPDX-License-Identifier: GPL-2.0
/* tracectx: the thread's current trace context into trace_ctx_by_tid */
#include "trace.bpf.h"
#include "tracectx.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct tracectx_event, event);

SEC("uprobe")
int BPF_KPROBE(slo_trace_set, __u64 trace_hi, __u64 trace_lo, __u64 span)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct trace_ctx t = { .trace_id_hi = trace_hi, .trace_id_lo = trace_lo, .span_id = span };

	/* all zero: the thread left its last span */
	if (!trace_hi && !trace_lo && !span)
		bpf_map_delete_elem(&trace_ctx_by_tid, &tid);
	else
		bpf_map_update_elem(&trace_ctx_by_tid, &tid, &t, BPF_ANY);
	return 0;
}
