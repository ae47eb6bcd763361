// SPDX-License-Identifier: GPL-2.0
/* retransmit: tp_btf tcp/tcp_retransmit_skb; the tuple is the join key */
#include "sock.bpf.h"
#include "retransmit.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct retransmit_event, event);

static __always_inline int handle_retransmit(const struct sock *sk)
{
	struct retransmit_event *e;
	struct tuple t;

	read_tuple(sk, &t);
	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	fill_hdr_current(&e->hdr);
	/* the socket's cgroup says more than the softirq's current task */
	e->hdr.cgroup_id = sock_cgroup_id(sk);
	__builtin_memcpy(e->saddr, t.saddr, sizeof(e->saddr));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(e->daddr));
	e->sport = t.sport;
	e->dport = t.dport;
	e->family = t.family;
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->pad = 0;
	submit_event(e);
	return 0;
}

/* tp_btf where the kernel has BTF-typed tracepoints; raw_tp as the fallback,
 * chosen by user space with autoload */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb, const struct sock *sk, const struct sk_buff *skb)
{
	count_run();
	return handle_retransmit(sk);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb_raw, const struct sock *sk, const struct sk_buff *skb)
{
	count_run();
	return handle_retransmit(sk);
}
