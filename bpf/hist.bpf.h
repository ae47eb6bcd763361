/* Kernel-only: per-slice log2 histograms in a hash map that user space drains
 * slice by slice (lookup-and-delete of finished slices). */
#ifndef SLO_HIST_BPF_H
#define SLO_HIST_BPF_H

#include "common.bpf.h"
#include "hist.h"

const volatile __u64 slice_ns = 1000000000ULL;

/* histogram updates that found the map full */
__u64 hist_dropped = 0;

KEEP_BTF(struct hist_key, hist_key);
KEEP_BTF(struct hist, hist);

#define HIST_MAP(name)					\
	struct {					\
		__uint(type, BPF_MAP_TYPE_HASH);	\
		__uint(max_entries, 16384);		\
		__type(key, struct hist_key);		\
		__type(value, struct hist);		\
	} name SEC(".maps")

HIST_MAP(hists);

/* floor(log2(v)), 0 for v <= 1: five compare-and-shift steps, not a loop over the bits
 * (this runs on every context switch the runqueue signal sees) */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	return r | (__u32)(v >> 1);
}

/* one sample into `map` (a HIST_MAP); an update that finds it full counts in *dropped */
static __always_inline void hist_add_to(void *map, __u64 *dropped, __u64 now, __u32 kind, __u64 id,
					__u64 cgroup, __u64 value_ns)
{
	struct hist_key key = { .slice = now / slice_ns, .id = id, .cgroup = cgroup, .kind = kind };
	static const struct hist zero;
	struct hist *h;
	__u32 slot;

	h = bpf_map_lookup_elem(map, &key);
	if (!h) {
		if (bpf_map_update_elem(map, &key, &zero, BPF_NOEXIST) &&
		    bpf_map_lookup_elem(map, &key) == NULL) {
			if (dropped)
				__sync_fetch_and_add(dropped, 1);
			return;
		}
		h = bpf_map_lookup_elem(map, &key);
		if (!h)
			return;
	}
	slot = log2_u64(value_ns / 1000);
	if (slot >= HIST_SLOTS)
		slot = HIST_SLOTS - 1;
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, value_ns);
	__sync_fetch_and_add(&h->slots[slot], 1);
	/* racy max across CPUs: a lost update only lowers max by one sample */
	if (value_ns > h->max_ns)
		h->max_ns = value_ns;
}

/* one sample for a task: process `tgid` in cgroup `cgid` */
static __always_inline void hist_add_task(__u64 now, __u32 tgid, __u64 cgid, __u64 value_ns)
{
	hist_add_to(&hists, &hist_dropped, now, HIST_TASK, tgid, cgid, value_ns);
}

static __always_inline __u64 task_cgroup_id(struct task_struct *t)
{
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

#endif
