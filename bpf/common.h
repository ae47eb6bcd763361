/* Types shared by the kernel programs and user space: fixed-width only. */
#ifndef SLO_COMMON_H
#define SLO_COMMON_H

#define TASK_COMM_LEN 16

/* every event starts with this header; ts_ns is CLOCK_MONOTONIC */
struct event_hdr {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	char comm[TASK_COMM_LEN];
};

/* the W3C trace context a thread published through the marker library
 * (capture/_trace/slotrace.c); all zero when it published none */
struct trace_ctx {
	__u64 trace_id_hi;
	__u64 trace_id_lo;
	__u64 span_id;
};

#endif
