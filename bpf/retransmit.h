/* retransmit: one event per retransmitted TCP segment */
#ifndef SLO_RETRANSMIT_H
#define SLO_RETRANSMIT_H

#include "common.h"

struct retransmit_event {
	struct event_hdr hdr;	/* pid is usually 0: retransmits run in softirq */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 state;		/* TCP state of the socket (TCP_ESTABLISHED = 1 ...) */
	__u8 pad;
};

#endif
