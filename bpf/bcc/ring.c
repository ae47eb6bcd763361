// SPDX-License-Identifier: GPL-2.0
/* BCC prelude of every signal (common.bpf.h's steps again, for BCC's run-time
 * compiler, which cannot include the CO-RE headers): the ring buffer, its wakeup policy, the rate
 * limit and load-shedding sampling, and the counters of events left out (the
 * BCC twin of common.bpf.h).
 * capture/bcc.py puts it in front of the signal's source: BCC rewrites map
 * calls only in the main file, never in an included one. */
#include "common.h"

/* set by user space with -D at compile time: BCC's .rodata */
#ifndef RING_PAGES
#define RING_PAGES 1024
#endif
#ifndef WAKEUP_BYTES
#define WAKEUP_BYTES 0		/* wake the drain only once per this many bytes */
#endif
#ifndef RATE_LIMIT
#define RATE_LIMIT 0		/* events per second, 0 = unlimited */
#endif
#ifndef RATE_BURST
#define RATE_BURST 0		/* events per 1/8 s at most, 0 = no cap */
#endif

#define RINGBUF_HDR_SZ 8

BPF_RINGBUF_OUTPUT(events, RING_PAGES);

/* read by user space: events that found the ring full */
BPF_ARRAY(dropped, u64, 1);

/* read by user space: events the rate limit or sampling left out */
BPF_ARRAY(sampled_out, u64, 1);

/* tunables user space changes while recording, to shed load (BCC has no
 * global data): [0] keep 1 event in 2^sample_shift, [1] latency thresholds
 * << threshold_shift */
#define TUNE_SAMPLE_SHIFT 0
#define TUNE_THRESHOLD_SHIFT 1
BPF_ARRAY(tune, u32, 2);

/* fixed windows of 2^30 ns (~1.07 s) and 2^27 ns (1/8 of that), each a
 * (window, count) pair */
#define RATE_WINDOW 0
#define BURST_WINDOW 2
BPF_ARRAY(windows, u64, 4);

/* bytes committed to the ring since load, for the wakeup policy */
BPF_ARRAY(produced, u64, 1);

static __always_inline u32 tunable(int i)
{
	u32 *v = tune.lookup(&i);

	return v ? *v : 0;
}

static __always_inline void count(void *counter)
{
	if (counter)
		lock_xadd((u64 *)counter, 1);
}

/* true when window `i` has already passed `limit` events, counting this one */
static __always_inline bool over_limit(int i, u64 window, u64 limit)
{
	int j = i + 1;
	u64 *w = windows.lookup(&i);
	u64 *n = windows.lookup(&j);
	u64 seen;

	if (!w || !n)
		return false;
	if (*w != window) {	/* racy reset: at worst a few extra events pass */
		*w = window;
		*n = 0;
	}
	seen = *n;
	lock_xadd(n, 1);
	return seen >= limit;
}

/* in-kernel sampling.events_per_second_limit / burst_limit and load shedding */
static __always_inline bool keep_event(void)
{
	u32 shift = tunable(TUNE_SAMPLE_SHIFT);
	int zero = 0;

	if (shift && (bpf_get_prandom_u32() & ((1U << (shift & 31)) - 1)))
		goto out;
#if RATE_LIMIT > 0
	if (over_limit(RATE_WINDOW, bpf_ktime_get_ns() >> 30, RATE_LIMIT))
		goto out;
#endif
#if RATE_BURST > 0
	if (over_limit(BURST_WINDOW, bpf_ktime_get_ns() >> 27, RATE_BURST))
		goto out;
#endif
	return true;
out:
	count(sampled_out.lookup(&zero));
	return false;
}

static __always_inline void *reserve_event(u32 size)
{
	void *e;
	int zero = 0;

	if (!keep_event())
		return NULL;
	e = events.ringbuf_reserve(size);
	if (!e)
		count(dropped.lookup(&zero));
	return e;
}

/* no wakeup per event: the drain polls with a timeout and is woken early once
 * per WAKEUP_BYTES committed. BCC 0.26 cannot pass this map to
 * bpf_ringbuf_query, so the fill is counted here instead of asked for. */
static __always_inline void submit_event(void *e, u32 size)
{
	u64 stride = (size + RINGBUF_HDR_SZ + 7) & ~7ULL;
	u64 flags = BPF_RB_FORCE_WAKEUP;
	int zero = 0;
	u64 *p = produced.lookup(&zero);

	if (p) {
		u64 before = *p;

		lock_xadd(p, stride);
#if WAKEUP_BYTES > 0
		/* racy between CPUs: a wakeup more or less, the poll timeout covers it */
		if ((before + stride) / WAKEUP_BYTES == before / WAKEUP_BYTES)
			flags = BPF_RB_NO_WAKEUP;
#endif
	}
	events.ringbuf_submit(e, flags);
}

static __always_inline void fill_hdr_current(struct event_hdr *h)
{
	u64 id = bpf_get_current_pid_tgid();

	h->ts_ns = bpf_ktime_get_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->pid = id >> 32;
	h->tid = (u32)id;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}
