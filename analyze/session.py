"""Opens run directories as DuckDB views: kernel_events, kernel_hist, spans, runs.

A path may be one run directory (it holds manifest.json) or any folder above
runs in the hive layout tag=/scenario=/run=; every run below it is opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from capture.errors import DataError
from capture.manifest import MANIFEST
from capture.safety import RESOURCES
from capture.schema import KERNEL_EVENTS, KERNEL_HIST, LABELS, REQUESTS
from capture.spans import SPANS

# view → (schema, files of one run directory that hold it)
TABLES = {
    "kernel_events": (KERNEL_EVENTS, "kernel_events/part-*.parquet"),
    "kernel_hist": (KERNEL_HIST, "kernel_hist/part-*.parquet"),
    "spans": (SPANS, "spans/part-*.parquet"),
    "requests": (REQUESTS, "requests/part-*.parquet"),
    "resources": (RESOURCES, "resources/part-*.parquet"),
    "labels": (LABELS, "labels.parquet"),
}


@dataclass
class Runs:
    con: duckdb.DuckDBPyConnection
    run_dirs: list[Path]
    skipped: list[str] = field(default_factory=list)  # "file: reason" for --skip-bad


def find_runs(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise DataError(f"{p} does not exist", "pass a run directory or a runs root")
        if (p / MANIFEST).is_file():
            found.append(p)
        else:
            found.extend(sorted(m.parent for m in p.rglob(MANIFEST)))
    if not found:
        raise DataError(f"no run directory (with {MANIFEST}) under {', '.join(map(str, paths))}",
                        "record one with 'slocap record --out DIR'")
    return found


def _check_parquet(path: Path, schema: pa.Schema) -> str | None:
    """None when the file is readable and has every column of the table."""
    try:
        have = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        return f"not readable Parquet ({exc})"
    missing = [f.name for f in schema if f.name not in have.names]
    return f"missing column(s) {', '.join(missing)}" if missing else None


def _manifest_row(run_dir: Path) -> dict:
    m = json.loads((run_dir / MANIFEST).read_text())
    return {
        "run_id": m.get("run_id"), "tag": m.get("tag"), "scenario": m.get("scenario"),
        "seed": m.get("seed"), "profile": m.get("profile"),
        "mode": (m.get("capability") or {}).get("mode"),
        "complete": m.get("complete"), "stop_reason": m.get("stop_reason"),
        "started_at": m.get("started_at"), "duration_s": m.get("duration_s"),
        "git_sha": m.get("git_sha"), "node": m.get("node"),
        "counters": json.dumps(m.get("counters")), "path": str(run_dir),
    }


def open_runs(paths: list[Path], *, skip_bad: bool = False) -> Runs:
    runs = Runs(duckdb.connect(), find_runs([Path(p) for p in paths]))
    rows = []
    for run_dir in runs.run_dirs:
        try:
            rows.append(_manifest_row(run_dir))
        except (OSError, ValueError) as exc:
            if not skip_bad:
                raise DataError(f"{run_dir / MANIFEST}: cannot read: {exc}",
                                "fix or remove that run, or pass --skip-bad") from None
            runs.skipped.append(f"{run_dir / MANIFEST}: {exc}")
    runs.con.from_arrow(pa.Table.from_pylist(rows)).create_view("runs")
    for table, (schema, pattern) in TABLES.items():
        files = []
        for run_dir in runs.run_dirs:
            for f in sorted(run_dir.glob(pattern)):
                problem = _check_parquet(f, schema)
                if problem is None:
                    files.append(str(f))
                elif skip_bad:
                    runs.skipped.append(f"{f}: {problem}")
                else:
                    raise DataError(f"{f}: {problem}", "remove or repair that file, or pass --skip-bad to open the rest")
        if files:
            runs.con.read_parquet(files, hive_partitioning=True, union_by_name=True).create_view(table)
        else:  # an empty table with the right columns, so queries still run
            runs.con.from_arrow(schema.empty_table()).create_view(table)
    return runs
