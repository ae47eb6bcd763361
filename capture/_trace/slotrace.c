/* How a traced process tells the kernel which trace and span its current thread
 * works on, without a trap per span.
 *
 * slo_trace_set() writes the context into a thread-local slot: a plain store.
 * At most once a second per thread it also calls slo_trace_register() with the
 * slot's address; slocap's uprobe on that empty function remembers the address
 * per thread, and the dns, connect and tls probes read the slot from the
 * thread's memory when they fire. So a thread is known to a recorder started
 * later within a second of its next span, and the uprobe's cost (a trap, ~10 µs
 * on a VM) is paid once a second, not twice per span. All zero clears. */
#include <stdint.h>
#include <time.h>

struct slo_trace_slot {
	uint64_t trace_hi;
	uint64_t trace_lo;
	uint64_t span;
};

static __thread struct slo_trace_slot slot;
static __thread int64_t registered_s = -1;

__attribute__((noinline, visibility("default")))
void slo_trace_register(struct slo_trace_slot *where)
{
	__asm__ volatile("" : : "r"(where) : "memory");
}

__attribute__((visibility("default")))
void slo_trace_set(uint64_t trace_hi, uint64_t trace_lo, uint64_t span)
{
	struct timespec now;

	slot.trace_hi = trace_hi;
	slot.trace_lo = trace_lo;
	slot.span = span;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	if (now.tv_sec != registered_s) {
		registered_s = now.tv_sec;
		slo_trace_register(&slot);
	}
}
