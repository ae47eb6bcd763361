"""Batch drain of a BPF ring buffer through mmap, parsed with numpy.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (writable by
user space); page 1 the producer position; then the data area, mapped twice
back to back so a record that wraps around the end reads as one piece. Each
record has an 8-byte header (length with BUSY/DISCARD bits, page offset) and is
padded to 8 bytes. Every record of one ring has the same struct, so a batch is
a strided numpy view: no per-record Python.
"""

from __future__ import annotations

import mmap

import numpy as np

from runfmt.errors import CaptureError

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8
PAGE = mmap.PAGESIZE


def record_stride(payload_size: int) -> int:
    return (payload_size + HDR_SIZE + 7) & ~7


class RingReader:
    """Reads fixed-size records of `dtype` from the ring buffer map `fd`."""

    def __init__(self, fd: int, ring_bytes: int, dtype: np.dtype) -> None:
        self.fd = fd
        self.mask = ring_bytes - 1
        self.dtype = dtype
        self.stride = record_stride(dtype.itemsize)
        self._consumer = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(fd, PAGE + 2 * ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
        self._cons_pos = np.frombuffer(self._consumer, dtype="<u8", count=1)
        self._prod_pos = np.frombuffer(self._data, dtype="<u8", count=1)
        # the record as it sits in the ring: header, then the payload
        self._framed = np.dtype({
            "names": ["len", "payload"],
            "formats": ["<u4", dtype],
            "offsets": [0, HDR_SIZE],
            "itemsize": self.stride,
        })

    def pending_bytes(self) -> int:
        return int(self._prod_pos[0] - self._cons_pos[0])

    def read(self, max_records: int | None = None) -> np.ndarray:
        """Copies out every committed record and frees its space in the ring."""
        cons = int(self._cons_pos[0])
        avail = int(self._prod_pos[0]) - cons
        n = avail // self.stride
        if max_records is not None:
            n = min(n, max_records)
        if n <= 0:
            return np.empty(0, dtype=self.dtype)
        framed = np.ndarray((n,), dtype=self._framed, buffer=self._data,
                            offset=PAGE + (cons & self.mask))
        lens = framed["len"]
        busy = np.flatnonzero(lens & BUSY_BIT)
        if busy.size:  # still being written: stop before it, read it next time
            n = int(busy[0])
            framed, lens = framed[:n], lens[:n]
        sizes = lens & ~np.uint32(BUSY_BIT | DISCARD_BIT)
        if n and not np.all(sizes == self.dtype.itemsize):
            bad = int(sizes[sizes != self.dtype.itemsize][0])
            raise CaptureError(
                f"ring buffer record of {bad} bytes where {self.dtype.itemsize} were expected",
                "the probe object and the loader disagree: rebuild with 'make bpf'",
            )
        keep = (lens & DISCARD_BIT) == 0
        out = framed["payload"][keep] if not keep.all() else framed["payload"].copy()
        # publish the new consumer position only after the copy
        self._cons_pos[0] = cons + n * self.stride
        return out

    def close(self) -> None:
        # the numpy views must go before the maps can close
        del self._cons_pos, self._prod_pos
        self._consumer.close()
        self._data.close()
