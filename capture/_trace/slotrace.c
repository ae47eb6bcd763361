/* The marker function a traced process calls to tell the kernel which trace
 * and span its current thread works on; slocap's uprobe reads the arguments.
 * All zero clears. The body is empty on purpose: the call is the message. */
#include <stdint.h>

__attribute__((noinline, visibility("default")))
void slo_trace_set(uint64_t trace_hi, uint64_t trace_lo, uint64_t span)
{
	__asm__ volatile("" : : "r"(trace_hi), "r"(trace_lo), "r"(span) : "memory");
}
