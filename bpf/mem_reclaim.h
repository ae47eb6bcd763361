/* mem_reclaim: a task stalled in page reclaim, direct (global) or memcg (its
 * cgroup at its memory limit), begin to end */
#ifndef SLO_MEM_RECLAIM_H
#define SLO_MEM_RECLAIM_H

#include "common.h"

#define RECLAIM_DIRECT 0
#define RECLAIM_MEMCG 1

struct mem_reclaim_event {
	struct event_hdr hdr;
	__u64 latency_ns;
	__u64 nr_reclaimed;	/* pages */
	__u32 order;		/* of the allocation that needed reclaim */
	__u32 kind;		/* RECLAIM_* */
};

#endif
