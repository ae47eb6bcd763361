/* Kernel-only helpers to read a socket's tuple and cgroup. */
#ifndef SLO_SOCK_BPF_H
#define SLO_SOCK_BPF_H

#include "common.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

struct tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
};

/* both ports in host order; v4 addresses in the first 4 bytes */
static __always_inline void read_tuple(const struct sock *sk, struct tuple *t)
{
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(t->saddr, 0, sizeof(t->saddr));
	__builtin_memset(t->daddr, 0, sizeof(t->daddr));
	if (t->family == AF_INET) {
		/* explicit sizes: BPF_CORE_READ_INTO would copy one byte into a u8 array */
		bpf_core_read(t->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(t->daddr, 4, &sk->__sk_common.skc_daddr);
	} else if (t->family == AF_INET6) {
		bpf_core_read(t->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(t->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/* the cgroup-v2 id the socket was created in (0 when it has none) */
static __always_inline __u64 sock_cgroup_id(const struct sock *sk)
{
	struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);

	if (!cg)
		return 0;
	return BPF_CORE_READ(cg, kn, id);
}

#endif
