// SPDX-License-Identifier: GPL-2.0
/* cpu_steal: at each sched_switch, the growth of this CPU's steal clock is
 * charged to the CPU and to the task switching out */
#include "hist.bpf.h"
#include "cpu_steal.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct cpu_steal_event, event);

/* last steal clock seen per CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_steal SEC(".maps");

/* the steal clock's growth on this CPU since the last switch, charged to the
 * CPU and to `prev` (its tgid and cgroup id come from the caller) */
static __always_inline int charge(__u64 steal, __u32 prev_tgid, __u64 prev_cgid)
{
	__u32 zero = 0;
	__u64 *last, now, delta;

	last = bpf_map_lookup_elem(&last_steal, &zero);
	if (!last)
		return 0;
	delta = *last && steal > *last ? steal - *last : 0;
	*last = steal;
	if (!delta)
		return 0;
	now = bpf_ktime_get_ns();
	hist_add(now, HIST_CPU, bpf_get_smp_processor_id(), delta);
	hist_add(now, HIST_PID, prev_tgid, delta);
	hist_add(now, HIST_CGROUP, prev_cgid, delta);
	return 0;
}

/* no runqueues ksym here: reach this CPU's rq through a task's cfs_rq */
SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	struct cfs_rq *cfs = next->se.cfs_rq;   /* direct loads: cheaper than probe reads */

	if (!cfs)
		cfs = prev->se.cfs_rq;
	if (!cfs)
		return 0;
	return charge(cfs->rq->prev_steal_time_rq, prev->tgid, prev->cgroups->dfl_cgrp->kn->id);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(sched_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	struct cfs_rq *cfs = BPF_CORE_READ(next, se.cfs_rq);

	if (!cfs)
		cfs = BPF_CORE_READ(prev, se.cfs_rq);
	if (!cfs)
		return 0;
	return charge(BPF_CORE_READ(cfs, rq, prev_steal_time_rq), BPF_CORE_READ(prev, tgid), task_cgroup_id(prev));
}
