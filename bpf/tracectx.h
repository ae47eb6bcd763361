/* tracectx: uprobe on slo_trace_register(slot), which a traced thread calls at
 * most once a second with the address of its trace-context slot */
#ifndef SLO_TRACECTX_H
#define SLO_TRACECTX_H

#include "common.h"

/* unused by the kernel side: keeps the ring and its reader uniform */
struct tracectx_event {
	struct event_hdr hdr;
	struct trace_ctx trace;
};

#endif
