/* cpu_steal: time the hypervisor ran something else, per CPU and per process,
 * from the scheduler's own accounting (rq->prev_steal_time_rq, ns resolution);
 * histograms only, no events */
#ifndef SLO_CPU_STEAL_H
#define SLO_CPU_STEAL_H

#include "common.h"
#include "hist.h"

/* unused by the kernel side: keeps the ring and its reader uniform */
struct cpu_steal_event {
	struct event_hdr hdr;
	__u64 steal_ns;
};

#endif
