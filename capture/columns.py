"""Vectorized helpers that turn probe records into kernel_events columns."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from runfmt.schema import KERNEL_EVENTS

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


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_ids(hi: np.ndarray | None, lo: np.ndarray) -> pa.Array:
    """128-bit (hi, lo) or 64-bit (lo) ids as lower-case hex, null where zero (no context).

    Trace ids are nearly all distinct, so converting "by unique" would be Python work per
    event: the digits are computed for the whole batch with numpy instead."""
    words = [lo] if hi is None else [hi, lo]
    n = len(lo)
    octets = np.hstack([np.asarray(w, dtype=np.uint64).astype(">u8").view(np.uint8).reshape(n, 8)
                        for w in words])
    digits = np.empty((n, 16 * len(words)), np.uint8)
    digits[:, 0::2] = _HEX_DIGITS[octets >> 4]
    digits[:, 1::2] = _HEX_DIGITS[octets & 15]
    zero = np.all(octets == 0, axis=1)
    text = pa.array(digits.view(f"S{16 * len(words)}").ravel(), pa.binary(), mask=zero)
    return text.cast(pa.string())


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
