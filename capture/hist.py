"""Drains the in-kernel per-slice histograms (bpf/hist.bpf.h) slice by slice."""

from __future__ import annotations

import ctypes

import numpy as np
import pyarrow as pa

from capture import _libbpf as L
from capture import columns as S
from capture.bpfobj import BpfObject
from runfmt import schema

KINDS = {1: "pid", 2: "cgroup", 3: "cpu"}


class HistReader:
    """Reads and deletes the `hists` entries of finished slices."""

    def __init__(self, obj: BpfObject) -> None:
        self.fd = obj.map_fd("hists")
        self.key_dtype = obj.struct_dtype("hist_key")
        self.value_dtype = obj.struct_dtype("hist")
        self._lib = L.lib()

    def _keys(self) -> np.ndarray:
        keys = []
        prev = None
        cur = ctypes.create_string_buffer(self.key_dtype.itemsize)
        while self._lib.bpf_map_get_next_key(self.fd, prev, cur) == 0:
            keys.append(cur.raw)
            prev = ctypes.create_string_buffer(cur.raw, self.key_dtype.itemsize)
        return np.frombuffer(b"".join(keys), dtype=self.key_dtype)

    def drain(self, before_slice: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) of every slice < before_slice (all when None), removed from the map."""
        keys = self._keys()
        if before_slice is not None:
            keys = keys[keys["slice"] < before_slice]
        values = np.zeros(len(keys), dtype=self.value_dtype)
        kept = np.ones(len(keys), dtype=bool)
        value_buf = ctypes.create_string_buffer(self.value_dtype.itemsize)
        for i in range(len(keys)):
            key_buf = ctypes.create_string_buffer(keys[i].tobytes(), self.key_dtype.itemsize)
            if self._lib.bpf_map_lookup_and_delete_elem(self.fd, key_buf, value_buf) != 0:
                kept[i] = False  # gone meanwhile
                continue
            values[i] = np.frombuffer(value_buf.raw, dtype=self.value_dtype)[0]
        return keys[kept], values[kept]


def hist_table(signal: str, keys: np.ndarray, values: np.ndarray, *, slice_ns: int,
               offset_ns: int, node: str) -> pa.Table:
    """kernel_hist rows: one per (slice, kind, id)."""
    n = len(keys)
    kind = keys["kind"]
    ids = keys["id"]
    slots = values["slots"].astype(np.int64)
    return pa.Table.from_arrays([
        pa.array(keys["slice"].astype(np.int64) * slice_ns + offset_ns, pa.int64()),
        pa.array(np.full(n, slice_ns, np.int64)),
        S.constant(signal, n, pa.string()),
        S.strings_by_unique(kind, lambda k: KINDS.get(int(k), str(int(k)))),
        pa.array(ids.astype(np.int32), pa.int32(), mask=kind != 1),
        pa.array(ids, pa.uint64(), mask=kind != 2),
        pa.array(ids.astype(np.int32), pa.int32(), mask=kind != 3),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.string()), pa.nulls(n, pa.string()),
        S.constant(node, n, pa.string()),
        pa.array(values["count"].astype(np.int64)),
        pa.array(values["sum_ns"].astype(np.int64)),
        pa.array(values["max_ns"].astype(np.int64)),
        pa.FixedSizeListArray.from_arrays(pa.array(slots.ravel()), slots.shape[1] if n else 27).cast(
            pa.list_(pa.int64())),
    ], schema=schema.KERNEL_HIST)
