"""Which runs the committed dataset keeps, and that compaction keeps every row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from replay.dataset import compact_run, select_runs
from tests.support.runs import write_run
from runfmt.manifest import MANIFEST


def _run(root: Path, scenario: str, run_id: str) -> Path:
    return write_run(root, run_id, scenario=scenario)


def test_select_keeps_the_first_reps_of_each_scenario_and_fewer_mixed(tmp_path):
    for scenario in ("baseline", "tcp_loss", "tcp_loss+retrieval_slowdown"):
        for i in range(3):
            _run(tmp_path, scenario, f"20261130T00000{i}Z-{scenario[:4]}")
    kept = select_runs(tmp_path, reps=2, mixed_reps=1)
    names = [(p.parent.name, p.name[-10:-5]) for p in kept]
    assert [n for n, _ in names].count("scenario=baseline") == 2
    assert [n for n, _ in names].count("scenario=tcp_loss") == 2
    assert [n for n, _ in names].count("scenario=tcp_loss+retrieval_slowdown") == 1
    assert all(p.name.split("Z-")[0].endswith(("0", "1")) for p in kept)  # the earliest ones
    assert len(select_runs(tmp_path)) == 9


def test_compaction_keeps_rows_and_values(tmp_path):
    src = _run(tmp_path / "src", "baseline", "20261130T000000Z-aaaa")
    (src / "spans").mkdir()
    rows = [{"trace_id": f"{i % 3:032x}", "span_id": f"{i:016x}", "start_ns": 10 - i, "x": i / 7} for i in range(10)]
    half = len(rows) // 2
    pq.write_table(pa.Table.from_pylist(rows[:half]), src / "spans" / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:]), src / "spans" / "part-00001.parquet")
    dst = tmp_path / "dst"
    compact_run(src, dst)
    out = pq.read_table(dst / "spans" / "part-00000.parquet").to_pylist()
    assert sorted(out, key=lambda r: r["span_id"]) == rows
    assert [r["trace_id"] for r in out] == sorted(r["trace_id"] for r in out)  # grouped by trace
    assert json.loads((dst / MANIFEST).read_text())["files"] == {"spans": ["part-00000.parquet"]}
