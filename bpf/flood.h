/* flood: a synthetic event for the drain benchmark and ring-buffer tests,
 * one per getppid() of the target process; not a signal */
#ifndef SLO_FLOOD_H
#define SLO_FLOOD_H

#include "common.h"

struct flood_event {
	struct event_hdr hdr;
	__u64 seq;		/* 0, 1, 2 ... across all CPUs: gaps mean loss */
	__u8 payload[48];	/* pads the record to the size of a connect event */
};

#endif
