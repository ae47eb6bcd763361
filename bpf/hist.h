/* In-kernel histograms per time slice, shared by runqueue and cpu_steal. */
#ifndef SLO_HIST_H
#define SLO_HIST_H

/* log2 buckets of microseconds: slot i counts [2^i, 2^(i+1)) µs, slot 0 also < 1 µs */
#define HIST_SLOTS 27

/* One key per task, not one per process and one per cgroup: a sample costs
 * one map update, and user space (capture/hist.py) rolls the task keys up
 * into the pid rows and the cgroup rows of kernel_hist. */
#define HIST_TASK 1		/* id = tgid, cgroup = its cgroup-v2 id */
#define HIST_CPU 2		/* id = cpu */

struct hist_key {
	__u64 slice;		/* CLOCK_MONOTONIC ns / slice_ns */
	__u64 id;
	__u64 cgroup;		/* HIST_TASK only */
	__u32 kind;
	__u32 pad;
};

struct hist {
	__u64 count;
	__u64 sum_ns;
	__u64 max_ns;
	__u32 slots[HIST_SLOTS];
	__u32 pad;
};

#endif
