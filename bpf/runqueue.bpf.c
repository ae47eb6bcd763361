// SPDX-License-Identifier: GPL-2.0
/* runqueue: sched_wakeup, sched_wakeup_new, sched_switch; tp_btf with the
 * wakeup time in task-local storage, raw_tp with a per-thread hash instead */
#include "steal.bpf.h"
#include "runqueue.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct runqueue_event, event);

#define TASK_RUNNING 0

const volatile __u64 min_delay_ns = 10000000ULL;

/* cpu_steal rides on this program's sched_switch: user space sets this and
 * shares cpu_steal's last_steal, steal_dropped and, as steal_hists, its hists
 * (capture/recorder.py); cleared when cpu_steal is switched off */
__u32 steal_on SEC(".data.tune") = 0;
HIST_MAP(steal_hists);

static __always_inline void ride_steal(__u64 steal, struct task_struct *prev, bool btf)
{
	__u32 zero = 0;
	__u64 delta = steal_delta(steal);

	if (!delta)
		return;
	steal_charge(&steal_hists, bpf_map_lookup_elem(&steal_dropped, &zero), delta,
		     btf ? prev->tgid : BPF_CORE_READ(prev, tgid),
		     btf ? prev->cgroups->dfl_cgrp->kn->id : task_cgroup_id(prev));
}

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} wakeup_ts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, __u64);
} wakeup_by_tid SEC(".maps");

/* tgid and cgroup id of `next` come from the caller: tp_btf reads them
 * directly, raw_tp through probe reads */
static __always_inline void record_delay(struct task_struct *next, struct task_struct *prev,
					 __u64 now, __u64 delay, __u32 tgid, __u64 cgid)
{
	struct runqueue_event *e;

	hist_add_task(now, tgid, cgid, delay);
	if (delay < (min_delay_ns << (threshold_shift & 31)))
		return;
	e = reserve_event(sizeof(*e));
	if (!e)
		return;
	e->hdr.ts_ns = now - delay;
	e->hdr.cgroup_id = cgid;
	e->hdr.pid = tgid;
	e->hdr.tid = BPF_CORE_READ(next, pid);
	BPF_CORE_READ_STR_INTO(&e->hdr.comm, next, comm);
	e->delay_ns = delay;
	e->cpu = bpf_get_smp_processor_id();
	e->prev_pid = BPF_CORE_READ(prev, tgid);
	BPF_CORE_READ_STR_INTO(&e->prev_comm, prev, comm);
	submit_event(e);
}

/* -- tp_btf: task-local storage -------------------------------------- */

/* task_in_target() with direct loads where BTF allows them (cheaper than
 * probe reads); the ancestor at a variable index still needs one */
static __always_inline bool task_in_target_btf(struct task_struct *p)
{
	struct cgroup *cg, *ancestor;

	if (!filter_cgroup)
		return true;
	cg = p->cgroups->dfl_cgrp;
	if (!cg || cg->level < (int)target_cgroup_level)
		return false;
	if (bpf_core_read(&ancestor, sizeof(ancestor), &cg->ancestors[target_cgroup_level & 255]))
		return false;
	return BPF_CORE_READ(ancestor, kn, id) == target_cgroup_id;
}

static __always_inline void mark_btf(struct task_struct *p)
{
	__u64 *ts;

	/* with --cgroup, other tasks get no storage: their switches end at the lookup */
	if (!task_in_target_btf(p))
		return;
	ts = bpf_task_storage_get(&wakeup_ts, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		*ts = bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	count_run();
	mark_btf(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	count_run();
	mark_btf(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	__u64 now = bpf_ktime_get_ns();
	__u64 *ts;

	if (steal_on)
		ride_steal(steal_clock_btf(prev, next), prev, true);
	/* preempted while runnable: it waits again from now */
	if (prev->__state == TASK_RUNNING && prev->pid)
		mark_btf(prev);
	if (!next->pid)
		return 0;
	ts = bpf_task_storage_get(&wakeup_ts, next, 0, 0);
	if (!ts || !*ts)
		return 0;
	record_delay(next, prev, now, now - *ts, next->tgid, next->cgroups->dfl_cgrp->kn->id);
	*ts = 0;
	return 0;
}

/* -- raw_tp: per-thread hash ----------------------------------------- */
/* The tp_btf programs' steps again, with a hash instead of task storage and
 * probe reads: kernels that refuse tp_btf load these, and autoload switches
 * one variant off, so the repetition is the price of one object for both. */

static __always_inline void mark_raw(struct task_struct *p)
{
	__u32 tid = BPF_CORE_READ(p, pid);
	__u64 now;

	if (!task_in_target(p))
		return;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&wakeup_by_tid, &tid, &now, BPF_ANY);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(sched_wakeup_raw, struct task_struct *p)
{
	count_run();
	mark_raw(p);
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new_raw, struct task_struct *p)
{
	count_run();
	mark_raw(p);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(sched_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = BPF_CORE_READ(next, pid);
	__u64 *ts;

	if (steal_on)
		ride_steal(steal_clock_raw(prev, next), prev, false);
	if (BPF_CORE_READ(prev, __state) == TASK_RUNNING && BPF_CORE_READ(prev, pid))
		mark_raw(prev);
	if (!tid)
		return 0;
	ts = bpf_map_lookup_elem(&wakeup_by_tid, &tid);
	if (!ts)
		return 0;
	record_delay(next, prev, now, now - *ts, BPF_CORE_READ(next, tgid), task_cgroup_id(next));
	bpf_map_delete_elem(&wakeup_by_tid, &tid);
	return 0;
}
