// SPDX-License-Identifier: GPL-2.0
/* connect: tp_btf sock/inet_sock_set_state, SYN_SENT -> ESTABLISHED or CLOSE */
#include "sock.bpf.h"
#include "trace.bpf.h"
#include "connect.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct connect_event, event);

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2

struct caller {
	struct event_hdr hdr;
	struct trace_ctx trace;
};

/* the caller's identity at SYN_SENT, by socket: ESTABLISHED runs in softirq */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct caller);
} pending SEC(".maps");

static __always_inline int handle_set_state(const struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	struct connect_event *e;
	struct caller *c;
	struct tuple t;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT) {
		struct caller start = {};

		if (!in_target())
			return 0;
		fill_hdr_current(&start.hdr);
		stamp_trace(&start.trace);
		bpf_map_update_elem(&pending, &key, &start, BPF_ANY);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	c = bpf_map_lookup_elem(&pending, &key);
	if (!c)
		return 0;
	read_tuple(sk, &t);
	e = reserve_event(sizeof(*e));
	if (e) {
		e->hdr = c->hdr;
		e->trace = c->trace;
		e->latency_ns = bpf_ktime_get_ns() - c->hdr.ts_ns;
		__builtin_memcpy(e->saddr, t.saddr, sizeof(e->saddr));
		__builtin_memcpy(e->daddr, t.daddr, sizeof(e->daddr));
		e->sport = t.sport;
		e->dport = t.dport;
		e->family = t.family;
		e->new_state = newstate;
		e->pad = 0;
		e->err = newstate == TCP_ESTABLISHED ? 0 : BPF_CORE_READ(sk, sk_err);
		e->pad2 = 0;
		submit_event(e);
	}
	bpf_map_delete_elem(&pending, &key);
	return 0;
}

/* tp_btf where the kernel has BTF-typed tracepoints; raw_tp as the fallback,
 * chosen by user space with autoload */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, int oldstate, int newstate)
{
	count_run();
	return handle_set_state(sk, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state_raw, const struct sock *sk, int oldstate, int newstate)
{
	count_run();
	return handle_set_state(sk, oldstate, newstate);
}
