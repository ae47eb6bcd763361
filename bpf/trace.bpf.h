/* Kernel-only: where each thread keeps its trace context, shared by every object
 * that stamps events (user space reuses one map fd for all of them).
 *
 * A traced thread writes its current trace context into a slot in its own
 * memory (capture/_trace/slotrace.c) and registers the slot's address now and
 * then; a stamping probe, firing in that thread's context, reads the slot. */
#ifndef SLO_TRACE_BPF_H
#define SLO_TRACE_BPF_H

#include "common.bpf.h"

struct trace_slot {
	__u32 tgid;  /* a reused tid of another process must not read this address */
	__u32 pad;
	__u64 addr;  /* user address of the thread's struct trace_ctx */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct trace_slot);
} trace_slot_by_tid SEC(".maps");

/* copies the current thread's trace context, zero when it has none */
static __always_inline void stamp_trace(struct trace_ctx *out)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct trace_slot *s = bpf_map_lookup_elem(&trace_slot_by_tid, &tid);

	if (s && s->tgid == (__u32)(id >> 32) &&
	    bpf_probe_read_user(out, sizeof(*out), (const void *)s->addr) == 0)
		return;
	out->trace_id_hi = 0;
	out->trace_id_lo = 0;
	out->span_id = 0;
}

#endif
