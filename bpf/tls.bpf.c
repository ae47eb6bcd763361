// SPDX-License-Identifier: GPL-2.0
/* tls: uprobe + uretprobe on SSL_do_handshake, SSL_connect and SSL_accept;
 * the attach cookie says which, so a nested call is not counted twice */
#include "trace.bpf.h"
#include "tls.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct tls_event, event);

struct start {
	__u64 ts_ns;
	struct trace_ctx trace;
	__u32 func;
	__u32 pad;
};

/* the outermost handshake call in flight, by thread */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct start);
} starts SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(tls_enter)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct start s = {};

	if (!in_target())
		return 0;
	s.ts_ns = bpf_ktime_get_ns();
	s.func = bpf_get_attach_cookie(ctx);
	stamp_trace(&s.trace);
	/* SSL_connect calls SSL_do_handshake: keep the outer one */
	bpf_map_update_elem(&starts, &id, &s, BPF_NOEXIST);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_exit, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct start *s = bpf_map_lookup_elem(&starts, &id);
	struct tls_event *e;

	if (!s || s->func != bpf_get_attach_cookie(ctx))
		return 0;
	e = reserve_event(sizeof(*e));
	if (e) {
		fill_hdr_current(&e->hdr);
		e->hdr.ts_ns = s->ts_ns;
		e->trace = s->trace;
		e->latency_ns = bpf_ktime_get_ns() - s->ts_ns;
		e->ret = ret;
		e->func = s->func;
		submit_event(e);
	}
	bpf_map_delete_elem(&starts, &id);
	return 0;
}
