/* Kernel-only: the per-thread trace context map, shared by every object that
 * stamps events (user space reuses one map fd for all of them). */
#ifndef SLO_TRACE_BPF_H
#define SLO_TRACE_BPF_H

#include "common.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct trace_ctx);
} trace_ctx_by_tid SEC(".maps");

/* copies the current thread's trace context, zero when it has none */
static __always_inline void stamp_trace(struct trace_ctx *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct trace_ctx *t = bpf_map_lookup_elem(&trace_ctx_by_tid, &tid);

	if (t) {
		*out = *t;
	} else {
		out->trace_id_hi = 0;
		out->trace_id_lo = 0;
		out->span_id = 0;
	}
}

#endif
