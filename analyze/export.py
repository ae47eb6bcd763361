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
        pacsv.write_csv(table, buf)
        text = buf.getvalue().decode()
    else:
        text = "".join(json.dumps(row, default=str) + "\n" for row in table.to_pylist())
    if output is None:
        return text
    output.write_text(text)
    return None
