// SPDX-License-Identifier: GPL-2.0
/* BCC prelude of every signal: the ring buffer, its wakeup policy and the
 * counter of events lost to a full ring (the BCC twin of common.bpf.h).
 * capture/bcc.py puts it in front of the signal's source: BCC rewrites map
 * calls only in the main file, never in an included one. */
#include "common.h"

/* set by user space with -D at compile time: BCC's .rodata */
#ifndef RING_PAGES
#define RING_PAGES 1024
#endif
#ifndef WAKEUP_BYTES
#define WAKEUP_BYTES 0
#endif

#define RINGBUF_HDR_SZ 8

BPF_RINGBUF_OUTPUT(events, RING_PAGES);

/* read by user space: events that found the ring full */
BPF_ARRAY(dropped, u64, 1);

/* bytes committed to the ring since load, for the wakeup policy */
BPF_ARRAY(produced, u64, 1);

static __always_inline void *reserve_event(u32 size)
{
	void *e = events.ringbuf_reserve(size);
	int zero = 0;
	u64 *n;

	if (!e) {
		n = dropped.lookup(&zero);
		if (n)
			lock_xadd(n, 1);
	}
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
