/* tracectx: uprobe on the marker function slo_trace_set(trace_hi, trace_lo, span)
 * that a traced process calls when a span starts or ends on a thread */
#ifndef SLO_TRACECTX_H
#define SLO_TRACECTX_H

#include "common.h"

/* unused by the kernel side: keeps the ring and its reader uniform */
struct tracectx_event {
	struct event_hdr hdr;
	struct trace_ctx trace;
};

#endif
