// SPDX-License-Identifier: GPL-2.0
/* runqueue: sched_switch only, reading the waits the kernel sums per task;
 * tp_btf with direct loads, raw_tp with probe reads */
#include "steal.bpf.h"
#include "runqueue.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct runqueue_event, event);

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

/* The kernel keeps what this signal needs (CONFIG_SCHED_INFO): when a task was
 * queued (sched_info.last_queued, on the rq clock, set at wakeup and again when
 * it is preempted while runnable) and the sum of its waits (sched_info.run_delay).
 * sched_switch fires before the kernel adds the wait that is ending, so that
 * wait is run_delay + (rq clock - last_queued) minus the sum at the task's last
 * switch-in. No wakeup hook is needed: one program per context switch instead
 * of three hooks (README, "Overhead benchmark"). A task moved to another CPU
 * while it waits keeps its whole wait, as run_delay gets both parts.
 * Per task we keep that sum + 1 (0: not seen yet). A task first seen after it
 * ran before the recording gives no delay until its next wait.
 *
 * The sums live in an array indexed by the thread id's low bits, each slot
 * tagged with its task's start time: a plain array lookup, where task-local
 * storage cost 120 ns more per run in the lab baseline (README, "Overhead
 * benchmark"), and an allocation and a free per thread. Two live threads that
 * share a slot take it from each other: each then gives no delay for its next
 * wait. Two such threads switched in on two CPUs at once could mix their
 * writes into one slot; `check` (tag ^ sum) tells a mixed slot, which then
 * counts as not seen. */
#define SEEN_SLOTS (1 << 16)

struct seen {
	__u64 start_time;	/* task_struct.start_time of the slot's task */
	__u64 sum;		/* its waits' sum at its last switch-in, + 1 */
	__u64 check;		/* start_time ^ sum, written last */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SEEN_SLOTS);
	__type(key, __u32);
	__type(value, struct seen);
} seen_delay SEC(".maps");

/* the sum stored for `next` (0: not seen yet) */
static __always_inline struct seen *seen_slot(__u32 tid, __u64 start_time, __u64 *stored)
{
	__u32 slot = tid & (SEEN_SLOTS - 1);
	struct seen *s = bpf_map_lookup_elem(&seen_delay, &slot);

	if (!s)
		return NULL;
	*stored = s->start_time == start_time && s->check == (start_time ^ s->sum) ? s->sum : 0;
	return s;
}

static __always_inline void seen_store(struct seen *s, __u64 start_time, __u64 sum)
{
	s->start_time = start_time;
	s->sum = sum;
	s->check = start_time ^ sum;
}

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

/* the task's waits summed up to now, the one ending included */
static __always_inline __u64 waited_total(__u64 run_delay, __u64 last_queued, __u64 rq_clock)
{
	return last_queued && rq_clock > last_queued ? run_delay + (rq_clock - last_queued) : run_delay;
}

/* the wait that ends now, from the stored sum; false when there is none to give:
 * a task first seen after it ran before the recording */
static __always_inline bool wait_ended(__u64 stored, __u64 total, __u64 pcount, __u64 *delay)
{
	bool known = stored || !pcount;   /* never ran before: its first wait starts at 0 */
	__u64 before = stored ? stored - 1 : 0;

	if (!known || total < before)
		return false;
	*delay = total - before;
	return true;
}

/* Whether a cgroup is under the target directory, and its id: both fixed for
 * the cgroup's life. Reading them means following the cgroup to its ancestor
 * and to both kernfs nodes, lines the scheduler never touches otherwise, at
 * each context switch. So each CPU keeps what it found in a small cache keyed
 * by the cgroup's serial_nr, which the kernel never gives to another cgroup:
 * a hit reads the serial_nr and one slot of this CPU's, nothing further
 * (README, "Overhead benchmark"). A slot holds serial_nr + 1, so that an
 * empty slot (0) never matches. */
#define CG_SLOTS 64

struct cg_known {
	__u64 tag;		/* serial_nr + 1 */
	__u64 id;		/* kernfs id: the cgroup_id of events and histograms */
	__u64 in_target;	/* under the --cgroup directory (always, without one) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CG_SLOTS);
	__type(key, __u32);
	__type(value, struct cg_known);
} cg_known SEC(".maps");

/* the cache entry of `cg`, filled on a miss; NULL only if the map fails */
static __always_inline struct cg_known *cgroup_known(struct cgroup *cg, __u64 serial)
{
	__u32 slot = serial & (CG_SLOTS - 1);
	struct cg_known *k = bpf_map_lookup_elem(&cg_known, &slot);

	if (k && k->tag != serial + 1) {
		k->in_target = cgroup_in_target(cg);
		k->id = BPF_CORE_READ(cg, kn, id);
		k->tag = serial + 1;
	}
	return k;
}

/* -- tp_btf: direct loads --------------------------------------------- */

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	struct cfs_rq *cfs = next->se.cfs_rq;   /* this CPU's: next is about to run here */
	struct cgroup *dfl = next->cgroups->dfl_cgrp;
	__u64 stored, delay, total;
	struct cg_known *cg;
	struct seen *seen;

	if (steal_on)
		ride_steal(steal_clock_btf(prev, next), prev, true);
	if (!next->pid || !cfs)
		return 0;
	cg = cgroup_known(dfl, dfl->self.serial_nr);
	/* with --cgroup, other tasks take no slot: their switches end here */
	if (!cg || !cg->in_target)
		return 0;
	seen = seen_slot(next->pid, next->start_time, &stored);
	if (!seen)
		return 0;
	total = waited_total(next->sched_info.run_delay, next->sched_info.last_queued, cfs->rq->clock);
	seen_store(seen, next->start_time, total + 1);
	if (wait_ended(stored, total, next->sched_info.pcount, &delay))
		record_delay(next, prev, bpf_ktime_get_ns(), delay, next->tgid, cg->id);
	return 0;
}

/* -- raw_tp: probe reads --------------------------------------------- */
/* The tp_btf program's steps again, with probe reads: kernels that refuse
 * tp_btf load this one, and autoload switches one variant off, so the
 * repetition is the price of one object for both. */

SEC("raw_tp/sched_switch")
int BPF_PROG(sched_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	count_run();
	struct cfs_rq *cfs = BPF_CORE_READ(next, se.cfs_rq);
	__u32 tid = BPF_CORE_READ(next, pid);
	__u64 stored, delay, total, start_time;
	struct cgroup *dfl;
	struct cg_known *cg;
	struct seen *seen;

	if (steal_on)
		ride_steal(steal_clock_raw(prev, next), prev, false);
	if (!tid || !cfs)
		return 0;
	dfl = BPF_CORE_READ(next, cgroups, dfl_cgrp);
	cg = cgroup_known(dfl, BPF_CORE_READ(dfl, self.serial_nr));
	if (!cg || !cg->in_target)
		return 0;
	start_time = BPF_CORE_READ(next, start_time);
	seen = seen_slot(tid, start_time, &stored);
	if (!seen)
		return 0;
	total = waited_total(BPF_CORE_READ(next, sched_info.run_delay), BPF_CORE_READ(next, sched_info.last_queued),
			     BPF_CORE_READ(cfs, rq, clock));
	seen_store(seen, start_time, total + 1);
	if (wait_ended(stored, total, BPF_CORE_READ(next, sched_info.pcount), &delay))
		record_delay(next, prev, bpf_ktime_get_ns(), delay, BPF_CORE_READ(next, tgid), cg->id);
	return 0;
}
