// SPDX-License-Identifier: GPL-2.0
/* cpu_steal: at each sched_switch, the growth of this CPU's steal clock is
 * charged to the CPU and to the task switching out. Loaded without attaching
 * when runqueue records too: runqueue's program then does it (steal.bpf.h). */
#include "steal.bpf.h"
#include "cpu_steal.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct cpu_steal_event, event);

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	__u64 delta = steal_delta(steal_clock_btf(prev, next));

	if (delta)
		steal_charge(&hists, &hist_dropped, delta, prev->tgid, prev->cgroups->dfl_cgrp->kn->id);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(sched_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	__u64 delta = steal_delta(steal_clock_raw(prev, next));

	if (delta)
		steal_charge(&hists, &hist_dropped, delta, BPF_CORE_READ(prev, tgid), task_cgroup_id(prev));
	return 0;
}
