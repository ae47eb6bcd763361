// SPDX-License-Identifier: GPL-2.0
/* retransmit through BCC: classic tracepoint tcp/tcp_retransmit_skb (twin of
 * retransmit.bpf.c). Without BTF the layout of struct sock is unknown, so the
 * tuple comes from the tracepoint's own fields, whose layout BCC reads from
 * tracefs at compile time. */
#include "retransmit.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
	struct retransmit_event *e = reserve_event(sizeof(*e));

	if (!e)
		return 0;
	fill_hdr_current(&e->hdr);
	/* the socket's cgroup needs struct sock; the softirq's current task is no
	 * substitute, so it stays unknown (0) */
	e->hdr.cgroup_id = 0;
	/* ports are in host order already; v4 addresses in the first 4 bytes */
	e->family = args->family;
	e->sport = args->sport;
	e->dport = args->dport;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (e->family == AF_INET) {
		__builtin_memcpy(e->saddr, args->saddr, 4);
		__builtin_memcpy(e->daddr, args->daddr, 4);
	} else if (e->family == AF_INET6) {
		__builtin_memcpy(e->saddr, args->saddr_v6, 16);
		__builtin_memcpy(e->daddr, args->daddr_v6, 16);
	}
	e->state = args->state;
	e->pad = 0;
	submit_event(e, sizeof(*e));
	return 0;
}
