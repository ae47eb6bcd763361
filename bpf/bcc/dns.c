// SPDX-License-Identifier: GPL-2.0
/* dns through BCC: uprobe + uretprobe on libc getaddrinfo (twin of dns.bpf.c:
 * BCC compiles this against kernel headers at run time, without CO-RE, so it
 * repeats the steps of dns.bpf.c instead of sharing its helpers) */
#include <uapi/linux/ptrace.h>
#include "dns.h"

#ifndef MIN_LATENCY_NS
#define MIN_LATENCY_NS 0
#endif

struct start {
	u64 ts_ns;
	char name[DNS_NAME_LEN];
};

/* calls in flight, by thread */
BPF_HASH(starts, u64, struct start, 8192);

/* a per-CPU scratch value: struct start is too large for the BPF stack */
BPF_PERCPU_ARRAY(scratch, struct start, 1);

int getaddrinfo_enter(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	const char *node = (const char *)PT_REGS_PARM1(ctx);
	int zero = 0;
	struct start *s = scratch.lookup(&zero);

	if (!s)
		return 0;
	s->ts_ns = bpf_ktime_get_ns();
	/* a NULL node is a service-only lookup; keep it with an empty name */
	s->name[0] = 0;
	if (node)
		bpf_probe_read_user_str(s->name, sizeof(s->name), node);
	starts.update(&id, s);
	return 0;
}

int getaddrinfo_exit(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct start *s = starts.lookup(&id);
	struct dns_event *e;
	u64 now = bpf_ktime_get_ns();

	if (!s)
		return 0;
	if (now - s->ts_ns < ((u64)MIN_LATENCY_NS << (tunable(TUNE_THRESHOLD_SHIFT) & 31)))
		goto out;
	e = reserve_event(sizeof(*e));
	if (!e)
		goto out;
	fill_hdr_current(&e->hdr);
	e->hdr.ts_ns = s->ts_ns;
	/* no trace context: its per-thread map belongs to the CO-RE tracectx probe */
	__builtin_memset(&e->trace, 0, sizeof(e->trace));
	e->latency_ns = now - s->ts_ns;
	e->ret = PT_REGS_RC(ctx);
	e->pad = 0;
	__builtin_memcpy(e->name, s->name, sizeof(e->name));
	submit_event(e, sizeof(*e));
out:
	starts.delete(&id);
	return 0;
}
