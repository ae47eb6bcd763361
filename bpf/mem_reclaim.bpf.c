// SPDX-License-Identifier: GPL-2.0
/* mem_reclaim: vmscan direct and memcg reclaim begin/end, by thread */
#include "common.bpf.h"
#include "mem_reclaim.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct mem_reclaim_event, event);

struct start {
	__u64 ts_ns;
	__u32 order;
	__u32 kind;
};

/* reclaims in flight, by thread: each object owns such a map (dns.bpf.c
 * keeps its lookups the same way) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct start);
} starts SEC(".maps");

static __always_inline int begin(int order, __u32 kind)
{
	count_run();	/* one per program run: each program calls begin or end once */
	__u64 id = bpf_get_current_pid_tgid();
	struct start s = { .ts_ns = bpf_ktime_get_ns(), .order = order, .kind = kind };

	if (!in_target())
		return 0;
	bpf_map_update_elem(&starts, &id, &s, BPF_ANY);
	return 0;
}

/* the event of a timed call: reserved, the task's header, its start and
 * latency; dns.bpf.c and tls.bpf.c fill theirs in the same few steps */
static __always_inline int end(unsigned long nr_reclaimed)
{
	count_run();	/* one per program run: each program calls begin or end once */
	__u64 id = bpf_get_current_pid_tgid();
	struct start *s = bpf_map_lookup_elem(&starts, &id);
	struct mem_reclaim_event *e;

	if (!s)
		return 0;
	e = reserve_event(sizeof(*e));
	if (e) {
		fill_hdr_current(&e->hdr);
		e->hdr.ts_ns = s->ts_ns;
		e->latency_ns = bpf_ktime_get_ns() - s->ts_ns;
		e->nr_reclaimed = nr_reclaimed;
		e->order = s->order;
		e->kind = s->kind;
		submit_event(e);
	}
	bpf_map_delete_elem(&starts, &id);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(direct_begin, int order) { return begin(order, RECLAIM_DIRECT); }

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(direct_end, unsigned long nr_reclaimed) { return end(nr_reclaimed); }

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(memcg_begin, int order) { return begin(order, RECLAIM_MEMCG); }

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(memcg_end, unsigned long nr_reclaimed) { return end(nr_reclaimed); }

/* raw_tp twins of the four programs above, for kernels without tp_btf */
SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(direct_begin_raw, int order) { return begin(order, RECLAIM_DIRECT); }

SEC("raw_tp/mm_vmscan_direct_reclaim_end")
int BPF_PROG(direct_end_raw, unsigned long nr_reclaimed) { return end(nr_reclaimed); }

SEC("raw_tp/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(memcg_begin_raw, int order) { return begin(order, RECLAIM_MEMCG); }

SEC("raw_tp/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(memcg_end_raw, unsigned long nr_reclaimed) { return end(nr_reclaimed); }
