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
	__u32 calls;
};

struct call {
	__u64 ssl;
	__u32 func;
	__u32 pad;
};

/* handshakes in progress, by SSL object: a non-blocking one spans several calls;
 * LRU, since one that fails with -1 is never seen to end */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct start);
} handshakes SEC(".maps");

/* the call in progress, by thread: the return probe has no arguments */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct call);
} calls SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(tls_enter, void *ssl)
{
	count_run();
	__u64 id = bpf_get_current_pid_tgid();
	__u64 key = (__u64)ssl;
	struct call c = { .ssl = key, .func = bpf_get_attach_cookie(ctx) };
	struct start s = {}, *h;

	if (!in_target())
		return 0;
	/* SSL_connect calls SSL_do_handshake: the outer call is the one that counts */
	if (bpf_map_update_elem(&calls, &id, &c, BPF_NOEXIST))
		return 0;
	h = bpf_map_lookup_elem(&handshakes, &key);
	if (h) {
		h->calls++;
		return 0;
	}
	s.ts_ns = bpf_ktime_get_ns();
	s.func = c.func;
	s.calls = 1;
	stamp_trace(&s.trace);
	bpf_map_update_elem(&handshakes, &key, &s, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_exit, int ret)
{
	count_run();
	__u64 id = bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &id);
	struct tls_event *e;
	struct start *s;
	__u64 key;

	if (!c || c->func != bpf_get_attach_cookie(ctx))
		return 0;
	key = c->ssl;
	bpf_map_delete_elem(&calls, &id);
	/* < 0: would block (or failed); the next call on this SSL goes on */
	if (ret < 0)
		return 0;
	s = bpf_map_lookup_elem(&handshakes, &key);
	if (!s)
		return 0;
	e = reserve_event(sizeof(*e));
	if (e) {
		fill_hdr_current(&e->hdr);
		e->hdr.ts_ns = s->ts_ns;
		e->trace = s->trace;
		e->latency_ns = bpf_ktime_get_ns() - s->ts_ns;
		e->ret = ret;
		e->func = s->func;
		e->calls = s->calls;
		e->pad = 0;
		submit_event(e);
	}
	bpf_map_delete_elem(&handshakes, &key);
	return 0;
}
