/* tls: libssl handshake latency, one event per outermost handshake call */
#ifndef SLO_TLS_H
#define SLO_TLS_H

#include "common.h"

#define TLS_FN_DO_HANDSHAKE 0
#define TLS_FN_CONNECT 1
#define TLS_FN_ACCEPT 2

struct tls_event {
	struct event_hdr hdr;
	struct trace_ctx trace;	/* of the calling thread at entry */
	__u64 latency_ns;
	__s32 ret;		/* 1 done; 0 shut down; < 0 error, or would block on a non-blocking socket */
	__u32 func;		/* TLS_FN_*: which entry point was called */
};

#endif
