/* connect: active TCP opens, SYN_SENT until ESTABLISHED or failure */
#ifndef SLO_CONNECT_H
#define SLO_CONNECT_H

#include "common.h"

struct connect_event {
	struct event_hdr hdr;	/* task that called connect(), saved at SYN_SENT */
	struct trace_ctx trace;	/* of that thread at SYN_SENT */
	__u64 latency_ns;	/* SYN_SENT to the final state */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 new_state;		/* TCP_ESTABLISHED (1) on success, else the failure state */
	__u8 pad;
	__s32 err;		/* sk_err at the transition: ECONNREFUSED, ETIMEDOUT ... */
	__u32 pad2;
};

#endif
