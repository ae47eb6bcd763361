"""Parquet part files, written whole: a crash loses at most the open buffer.

Each part is written to a hidden temporary name and renamed into place, so a
file named part-*.parquet is always complete and readable.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_table_atomic(table: pa.Table, path: Path, **options) -> int:
    """Writes a zstd Parquet file via a temporary name; returns its size in bytes.
    `options` go to pyarrow.parquet.write_table."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, **{"compression": "zstd", **options})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


# a part is also closed when its buffer holds this much: memory stays bounded however wide
# the rows (span attributes can be kilobytes each)
MAX_BUFFER_BYTES = 32 << 20


class PartWriter:
    """Buffers Arrow tables and writes part-NNNNN.parquet by row count, size or age.

    Numbering goes on after the parts already in `directory` (slocap repair adds span
    parts to a cut run), and `part_metadata` is written into each part's schema metadata."""

    def __init__(self, directory: Path, schema: pa.Schema, *, max_rows: int, max_seconds: float,
                 write_options: dict | None = None) -> None:
        self.directory = directory
        self.write_options = write_options or {}  # for write_table_atomic
        self.schema = schema
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.parts: list[str] = []
        self.rows_written = 0
        self.bytes_written = 0
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._opened_at = time.monotonic()
        self.part_metadata: dict[str, str] = {}
        directory.mkdir(parents=True, exist_ok=True)
        self._next = 1 + max((_part_number(p.name) for p in directory.glob("part-*.parquet")), default=-1)

    @property
    def buffered_rows(self) -> int:
        return self._buffered_rows

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self._buffer.append(table)
            self._buffered_rows += table.num_rows
            self._buffered_bytes += table.nbytes
        if self._buffered_rows >= self.max_rows or self._buffered_bytes >= MAX_BUFFER_BYTES:
            self.flush()

    def due(self) -> bool:
        return bool(self._buffered_rows) and time.monotonic() - self._opened_at >= self.max_seconds

    def flush(self) -> None:
        self._opened_at = time.monotonic()
        if not self._buffered_rows:
            return
        table = pa.concat_tables(self._buffer)
        schema = _encoded(self.schema, table.schema)
        if self.part_metadata:
            schema = schema.with_metadata({**(schema.metadata or {}), **self.part_metadata})
        table = table.cast(schema).unify_dictionaries()
        name = f"part-{self._next:05d}.parquet"
        self._next += 1
        self.directory.mkdir(parents=True, exist_ok=True)  # removed once emptied (otlp_raw) and used again
        self.bytes_written += write_table_atomic(table, self.directory / name, **self.write_options)
        self.parts.append(name)
        self.rows_written += table.num_rows
        self._buffer.clear()
        self._buffered_rows = 0
        self._buffered_bytes = 0


def _part_number(name: str) -> int:
    """NNNNN of part-NNNNN.parquet; -1 for another name."""
    digits = name[len("part-"):-len(".parquet")]
    return int(digits) if digits.isdigit() else -1


def _encoded(schema: pa.Schema, have: pa.Schema) -> pa.Schema:
    """`schema`, but a column that arrives dictionary-encoded stays so (the spans'
    per-resource texts, capture/spans.py): decoding would copy its value into every row.
    The part's chunks then share one dictionary, or Parquet would decode them itself."""
    fields = []
    for f in schema:
        t = have.field(f.name).type if f.name in have.names else None
        if t is not None and pa.types.is_dictionary(t) and t.value_type == f.type:
            f = f.with_type(t)
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


# the tables the recorder writes, each a folder of parts (otlp_raw only until the spans are
# flattened from it: capture/span_flatten.py)
RECORDED_TABLES = ("kernel_events", "kernel_hist", "resources", "spans", "span_resources", "otlp_raw")


# otlp_raw holds whole request bodies, each unique: a dictionary and min/max statistics of
# them are work for nothing (a third of the part's CPU), and the parts go once flattened
WRITE_OPTIONS = {"otlp_raw": {"use_dictionary": False, "write_statistics": False}}


class RunWriters:
    """A part writer for each table the recorder writes into one run directory."""

    def __init__(self, run_dir: Path, *, max_rows: int, max_seconds: float) -> None:
        from runfmt.schema import TABLES

        self.by_table = {t: PartWriter(run_dir / t, TABLES[t][0], max_rows=max_rows, max_seconds=max_seconds,
                                       write_options=WRITE_OPTIONS.get(t))
                         for t in RECORDED_TABLES}

    def __getitem__(self, table: str) -> PartWriter:
        return self.by_table[table]

    def files(self) -> dict[str, list[str]]:
        """The parts written so far, per table: the manifest's `files`."""
        return {t: list(w.parts) for t, w in self.by_table.items()}

    def flush(self, *tables: str) -> None:
        for t in tables or RECORDED_TABLES:
            self.by_table[t].flush()
