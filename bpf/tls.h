/* tls: libssl handshake latency, one event per handshake: from the first call
 * on an SSL object to the call that finishes it (a non-blocking socket calls
 * SSL_do_handshake again after each WANT_READ/WANT_WRITE) */
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
	__s32 ret;		/* 1 done; 0 shut down by the peer */
	__u32 func;		/* TLS_FN_*: which entry point was called */
	__u32 calls;		/* calls it took (more than 1 on a non-blocking socket) */
	__u32 pad;
};

#endif
