/* runqueue: wakeup → run delay; histograms per pid and cgroup per slice in
 * the kernel, events only for delays above min_delay_ns */
#ifndef SLO_RUNQUEUE_H
#define SLO_RUNQUEUE_H

#include "common.h"
#include "hist.h"

struct runqueue_event {
	struct event_hdr hdr;	/* the task that waited */
	__u64 delay_ns;
	__u32 cpu;
	__u32 prev_pid;		/* who ran while it waited (last one switched out) */
	char prev_comm[TASK_COMM_LEN];
};

#endif
