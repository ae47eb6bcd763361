"""Run directories for tests, written where the run format says each table lives."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runfmt.manifest import write_manifest
from runfmt.schema import TABLES


def write_run(root: Path, run_id: str, *, tag: str = "main", scenario: str = "dns_latency",
              manifest: dict | None = None, parts: int = 1, **tables: pa.Table | list[dict]) -> Path:
    """root/tag=TAG/scenario=SCENARIO/run=RUN_ID with a manifest and each given table
    (an Arrow table, or rows as dicts with missing columns null), in `parts` part files."""
    run_dir = root / f"tag={tag}" / f"scenario={scenario}" / f"run={run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        schema, pattern = TABLES[name]
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
        if "/" not in pattern:  # one file (labels.parquet)
            pq.write_table(table, run_dir / pattern)
            continue
        (run_dir / name).mkdir(exist_ok=True)
        step = max(1, -(-table.num_rows // parts))
        for i in range(parts):
            pq.write_table(table.slice(i * step, step), run_dir / name / f"part-{i:05d}.parquet")
    write_manifest(run_dir, {"run_id": run_id, "tag": tag, "scenario": scenario, "complete": True,
                             "capability": {"mode": "core_full"}, "counters": {}, **(manifest or {})})
    return run_dir


def command_args(command: str, runs: Path, tmp_path: Path, sql: str = "SELECT count(*) FROM requests") -> list[str]:
    """The arguments of each sloan command that reads runs, over `runs` (compare and gate
    between tags main and next), with small resample counts."""
    p = str(runs)
    return {
        "sql": ["sql", sql, "--runs", p],
        "correlate": ["correlate", "--runs", p],
        "slo": ["slo", "--runs", p],
        "attribute": ["attribute", "--runs", p],
        "score": ["score", "--runs", p, "--resamples", "100"],
        "report": ["report", "--runs", p, "-o", str(tmp_path / "report.md")],
        "repro": ["repro", "--runs", p],
        "compare": ["compare", "main", "next", "--runs", p, "--resamples", "100"],
        "gate": ["gate", "--runs", p, "--base", "main", "--candidate", "next", "--resamples", "100"],
    }[command]
