/* Kernel-only: cpu_steal's steps, shared by its own sched_switch program and
 * by runqueue's. When both signals record, runqueue's program charges the
 * steal too, into cpu_steal's maps (user space shares them), so a context
 * switch runs one program instead of two (README, the signals table). */
#ifndef SLO_STEAL_BPF_H
#define SLO_STEAL_BPF_H

#include "hist.bpf.h"

/* last steal clock seen per CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_steal SEC(".maps");

/* steal histogram updates that found the map full, when runqueue's program
 * charges them: a map, so that cpu_steal's probe reads them */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} steal_dropped SEC(".maps");

/* no runqueues ksym here: this CPU's rq through a task's cfs_rq; 0 without one */
static __always_inline __u64 steal_clock_btf(struct task_struct *prev, struct task_struct *next)
{
	struct cfs_rq *cfs = next->se.cfs_rq;   /* direct loads: cheaper than probe reads */

	if (!cfs)
		cfs = prev->se.cfs_rq;
	return cfs ? cfs->rq->prev_steal_time_rq : 0;
}

static __always_inline __u64 steal_clock_raw(struct task_struct *prev, struct task_struct *next)
{
	struct cfs_rq *cfs = BPF_CORE_READ(next, se.cfs_rq);

	if (!cfs)
		cfs = BPF_CORE_READ(prev, se.cfs_rq);
	return cfs ? BPF_CORE_READ(cfs, rq, prev_steal_time_rq) : 0;
}

/* the steal clock's growth on this CPU since the last switch (0 on the first) */
static __always_inline __u64 steal_delta(__u64 steal)
{
	__u32 zero = 0;
	__u64 *last, delta;

	if (!steal)
		return 0;
	last = bpf_map_lookup_elem(&last_steal, &zero);
	if (!last)
		return 0;
	delta = *last && steal > *last ? steal - *last : 0;
	*last = steal;
	return delta;
}

/* `delta` charged to this CPU and to the task switching out */
static __always_inline void steal_charge(void *map, __u64 *dropped, __u64 delta, __u32 prev_tgid, __u64 prev_cgid)
{
	__u64 now = bpf_ktime_get_ns();

	hist_add_to(map, dropped, now, HIST_CPU, bpf_get_smp_processor_id(), 0, delta);
	hist_add_to(map, dropped, now, HIST_TASK, prev_tgid, prev_cgid, delta);
}

#endif
