// SPDX-License-Identifier: GPL-2.0
/* tracectx: the address of each traced thread's trace-context slot, into
 * trace_slot_by_tid (see trace.bpf.h and capture/_trace/slotrace.c) */
#include "trace.bpf.h"
#include "tracectx.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct tracectx_event, event);

SEC("uprobe")
int BPF_KPROBE(slo_trace_register, void *where)
{
	count_run();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct trace_slot s = { .tgid = (__u32)(id >> 32), .addr = (__u64)where };

	bpf_map_update_elem(&trace_slot_by_tid, &tid, &s, BPF_ANY);
	return 0;
}
