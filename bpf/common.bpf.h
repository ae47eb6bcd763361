/* Kernel-only helpers shared by every signal: the ring buffer, its wakeup
 * policy and the counter of events lost to a full ring. */
#ifndef SLO_COMMON_BPF_H
#define SLO_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "common.h"

/* user space derives its view of an event struct from BTF; a struct only
 * reached through the ring buffer's void pointer needs a typed global to be
 * kept in the object's BTF */
#define KEEP_BTF(type, name) type *__btf_##name __attribute__((unused))

/* user space sets these before load */
const volatile __u64 wakeup_bytes = 0;	/* wake the drain only past this fill */
const volatile __u64 rate_limit = 0;	/* events per second, 0 = unlimited */
const volatile __u64 rate_burst = 0;	/* events per 1/8 s at most, 0 = no cap */

/* record only tasks under one cgroup-v2 directory (user space puts its fd in
 * target_cgroup[0]) when filter_cgroup is set */
const volatile bool filter_cgroup = false;

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target_cgroup SEC(".maps");

static __always_inline bool in_target(void)
{
	return !filter_cgroup || bpf_current_task_under_cgroup(&target_cgroup, 0) == 1;
}

/* safety.bpf_run_time "calibrate": the kernel counts program runs (run_cnt)
 * only while BPF stats are on, so in that mode every program counts its own
 * runs here, per CPU, and user space multiplies them by the ns per run it
 * measured while the stats were briefly on (README, Safety). Off (the
 * default) the verifier prunes the counting on this frozen constant; the
 * read of the flag stays (4 instructions on sched_switch). */
const volatile bool count_runs = false;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} run_count SEC(".maps");

static __always_inline void count_run(void)
{
	__u32 zero = 0;
	__u64 *n;

	if (!count_runs)
		return;
	n = bpf_map_lookup_elem(&run_count, &zero);
	if (n)
		*n += 1;
}

/* the same directory by id and depth below the cgroup-v2 root, for a task that
 * is not the current one (the task switched to): whether cgroup `cg` is under it */
const volatile __u64 target_cgroup_id = 0;
const volatile __u32 target_cgroup_level = 0;

static __always_inline bool cgroup_in_target(struct cgroup *cg)
{
	struct cgroup *ancestor;

	if (!filter_cgroup)
		return true;
	if (!cg || BPF_CORE_READ(cg, level) < (int)target_cgroup_level)
		return false;
	if (bpf_core_read(&ancestor, sizeof(ancestor), &cg->ancestors[target_cgroup_level & 255]))
		return false;
	return BPF_CORE_READ(ancestor, kn, id) == target_cgroup_id;
}

/* tunables user space changes while recording, to shed load (never written
 * by the programs, so a read-modify-write from user space is safe) */
__u32 sample_shift SEC(".data.tune") = 0;	/* keep 1 event in 2^shift */
__u32 threshold_shift SEC(".data.tune") = 0;	/* latency thresholds << shift */

/* read by user space: events that found the ring full, events the rate
 * limit or sampling left out */
__u64 dropped = 0;
__u64 sampled_out = 0;

/* fixed windows of 2^30 ns (~1.07 s) and 2^27 ns (1/8 of that) */
__u64 rate_window = 0;
__u64 rate_count = 0;
__u64 burst_window = 0;
__u64 burst_count = 0;

/* in-kernel sampling.events_per_second_limit / burst_limit and load shedding */
static __always_inline bool keep_event(void)
{
	__u64 now, w;

	if (sample_shift && (bpf_get_prandom_u32() & ((1U << (sample_shift & 31)) - 1)))
		goto out;
	if (!rate_limit && !rate_burst)
		return true;
	now = bpf_ktime_get_ns();
	w = now >> 30;
	if (rate_window != w) {	/* racy reset: at worst a few extra events pass */
		rate_window = w;
		rate_count = 0;
	}
	if (rate_limit && __sync_fetch_and_add(&rate_count, 1) >= rate_limit)
		goto out;
	w = now >> 27;
	if (burst_window != w) {
		burst_window = w;
		burst_count = 0;
	}
	if (rate_burst && __sync_fetch_and_add(&burst_count, 1) >= rate_burst)
		goto out;
	return true;
out:
	__sync_fetch_and_add(&sampled_out, 1);
	return false;
}

/* max_entries is resized by user space before load */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

static __always_inline void *reserve_event(__u64 size)
{
	void *e;

	if (!keep_event())
		return NULL;
	e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e)
		__sync_fetch_and_add(&dropped, 1);
	return e;
}

/* no wakeup per event: the drain polls with a timeout and is woken early only
 * when the ring fills past wakeup_bytes */
static __always_inline void submit_event(void *e)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

static __always_inline void fill_hdr_current(struct event_hdr *h)
{
	__u64 id = bpf_get_current_pid_tgid();

	h->ts_ns = bpf_ktime_get_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->pid = id >> 32;
	h->tid = (__u32)id;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

#endif
