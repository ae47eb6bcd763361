"""Arrow schema of the run directory's tables, and vectorized column helpers."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KERNEL_EVENTS = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),  # wall clock, ns since the epoch
    pa.field("signal", pa.string(), nullable=False),
    pa.field("pid", pa.int32()),
    pa.field("tid", pa.int32()),
    pa.field("comm", pa.string()),
    pa.field("cgroup_id", pa.uint64()),
    pa.field("pod", pa.string()),
    pa.field("namespace", pa.string()),
    pa.field("container", pa.string()),
    pa.field("node", pa.string()),
    pa.field("saddr", pa.string()),
    pa.field("daddr", pa.string()),
    pa.field("sport", pa.int32()),
    pa.field("dport", pa.int32()),
    pa.field("family", pa.int32()),
    pa.field("value_ns", pa.int64()),  # latency; null for count-like signals
    pa.field("detail", pa.string()),  # DNS name, TCP state ...
    pa.field("errno", pa.int32()),  # connect: sk_err; dns: getaddrinfo's EAI code
    pa.field("trace_id", pa.string()),
    pa.field("span_id", pa.string()),
])

# in-kernel aggregates per time slice (runqueue delay, cpu steal)
KERNEL_HIST = pa.schema([
    pa.field("ts_ns", pa.int64(), nullable=False),  # slice start, wall clock
    pa.field("slice_ns", pa.int64(), nullable=False),
    pa.field("signal", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # pid | cgroup | cpu
    pa.field("pid", pa.int32()),
    pa.field("cgroup_id", pa.uint64()),
    pa.field("cpu", pa.int32()),
    pa.field("pod", pa.string()),
    pa.field("namespace", pa.string()),
    pa.field("container", pa.string()),
    pa.field("node", pa.string()),
    pa.field("count", pa.int64()),
    pa.field("sum_ns", pa.int64()),
    pa.field("max_ns", pa.int64()),
    # log2 buckets of µs: buckets[i] counts [2^i, 2^(i+1)) µs, buckets[0] also < 1 µs
    pa.field("buckets", pa.list_(pa.int64())),
])

# the load generator's view, one row per request (replay/loadgen.py)
REQUESTS = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("phase", pa.string()),
    pa.field("prompt_class", pa.string(), nullable=False),
    pa.field("scheduled_ns", pa.int64(), nullable=False),  # wall clock, ns since the epoch
    pa.field("sent_ns", pa.int64()),  # wall clock; null when dropped by the client
    pa.field("ttft_ms", pa.float64()),
    pa.field("tpot_ms", pa.float64()),
    pa.field("itl_ms", pa.list_(pa.float64())),
    pa.field("e2e_ms", pa.float64()),
    pa.field("output_tokens", pa.int32()),
    pa.field("status", pa.string(), nullable=False),  # ok | http_<code> | timeout | error | dropped_by_client
    pa.field("http_status", pa.int32()),
    pa.field("error", pa.string()),
    pa.field("trace_id", pa.string()),  # 32 hex digits, the client span's
    pa.field("attempts", pa.int32()),  # gateway's x-lab-attempts header
])

# ground truth of a lab run: which fault was injected where, and when
LABELS = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("scenario", pa.string(), nullable=False),
    pa.field("domain", pa.string(), nullable=False),  # v1 fault domain
    pa.field("target", pa.string()),  # the lab service the fault was injected into
    pa.field("start_ns", pa.int64(), nullable=False),  # wall clock, before inject() was called
    pa.field("end_ns", pa.int64(), nullable=False),  # after clear() returned
])

AF_INET = 2
AF_INET6 = 10

# include/net/tcp_states.h
TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
    11: "CLOSING", 12: "NEW_SYN_RECV",
}


def strings_by_unique(values: np.ndarray, decode) -> pa.Array:
    """Converts each distinct value once: comms, names and addresses repeat a lot."""
    if len(values) == 0:
        return pa.array([], pa.string())
    uniq, inverse = np.unique(values, return_inverse=True)
    dictionary = pa.array([decode(u) for u in uniq], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), dictionary).cast(pa.string())


def c_strings(raw: np.ndarray) -> pa.Array:
    """NUL-terminated char arrays (numpy 'S' dtype) to UTF-8 strings."""
    # stop at the first NUL: the kernel leaves older bytes after it
    return strings_by_unique(raw, lambda b: bytes(b).split(b"\0", 1)[0].decode("utf-8", "replace"))


def addresses(family: np.ndarray, raw: np.ndarray) -> pa.Array:
    """16-byte address fields (v4 in the first 4 bytes) to text, null for other families."""
    keyed = np.empty(len(family), dtype=[("family", "<u2"), ("addr", "V16")])
    keyed["family"] = family
    keyed["addr"] = np.ascontiguousarray(raw).view("V16").ravel()

    def fmt(key) -> str | None:
        fam, addr = int(key["family"]), bytes(key["addr"])
        if fam == AF_INET:
            return str(ipaddress.IPv4Address(addr[:4]))
        if fam == AF_INET6:
            return str(ipaddress.IPv6Address(addr))
        return None

    return strings_by_unique(keyed, fmt)


def hex_ids(hi: np.ndarray | None, lo: np.ndarray) -> pa.Array:
    """128-bit (hi, lo) or 64-bit (lo) ids as lower-case hex, null where zero (no context)."""
    if hi is None:
        key = lo
        fmt = lambda v: f"{int(v):016x}"  # noqa: E731
        zero = lo == 0
    else:
        key = np.empty(len(lo), dtype=[("hi", "<u8"), ("lo", "<u8")])
        key["hi"], key["lo"] = hi, lo
        fmt = lambda v: f"{int(v['hi']):016x}{int(v['lo']):016x}"  # noqa: E731
        zero = (hi == 0) & (lo == 0)
    ids = strings_by_unique(key, fmt)
    return pc.if_else(pa.array(zero), pa.scalar(None, pa.string()), ids) if zero.any() else ids


def tcp_state_names(states: np.ndarray) -> pa.Array:
    return strings_by_unique(states, lambda s: TCP_STATES.get(int(s), f"STATE_{int(s)}"))


def constant(value, n: int, type_: pa.DataType) -> pa.Array:
    return pa.nulls(n, type_) if value is None else pa.array(np.full(n, value), type_)


def kernel_events_table(columns: dict[str, pa.Array | np.ndarray], n: int) -> pa.Table:
    """Builds a kernel_events table: missing columns become nulls, types are enforced."""
    arrays = []
    for field in KERNEL_EVENTS:
        col = columns.get(field.name)
        if col is None:
            arrays.append(pa.nulls(n, field.type))
        else:
            arrays.append(pa.array(col, field.type) if isinstance(col, np.ndarray) else col.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=KERNEL_EVENTS)
