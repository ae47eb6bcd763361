/* dns: libc getaddrinfo latency, one event per completed call */
#ifndef SLO_DNS_H
#define SLO_DNS_H

#include "common.h"

#define DNS_NAME_LEN 128

struct dns_event {
	struct event_hdr hdr;
	struct trace_ctx trace;	/* of the calling thread at entry */
	__u64 latency_ns;
	__s32 ret;		/* getaddrinfo's return: 0 or an EAI_* code */
	__u32 pad;
	char name[DNS_NAME_LEN];
};

#endif
