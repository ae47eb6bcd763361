"""Writes a query result as CSV, JSON lines or Parquet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def write_result(table: pa.Table, fmt: str, output: Path | None) -> str | None:
    """Writes to `output`, or returns the text when `output` is None (csv, json)."""
    if fmt == "parquet":
        assert output is not None
        pq.write_table(table, output, compression="zstd")
        return None
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(_nested_as_json(table), buf)
        text = buf.getvalue().decode()
    else:
        text = "".join(json.dumps(row, default=str) + "\n" for row in table.to_pylist())
    if output is None:
        return text
    output.write_text(text)
    return None


def _nested_as_json(table: pa.Table) -> pa.Table:
    """CSV has no lists, maps or structs: such columns are written as JSON text."""
    for i, f in enumerate(table.schema):
        if pa.types.is_nested(f.type):
            text = [None if v is None else json.dumps(v, default=str) for v in table.column(i).to_pylist()]
            table = table.set_column(i, f.name, pa.array(text, pa.string()))
    return table
