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

/* read by user space through the mmap'ed .bss: events that found the ring full */
__u64 dropped = 0;

/* max_entries is resized by user space before load */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

static __always_inline void *reserve_event(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);

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
