"""slocap repair: a cut run's manifest rebuilt from the parts on disk.

A recorder killed with SIGKILL (or a machine that stopped) leaves a manifest
that still says state "recording", written when the last part was closed. The
parts themselves are always whole (runfmt/writer.py writes them under a hidden
name and renames them), so the truth is on disk: repair counts it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from runfmt import manifest as M
from runfmt.errors import DataError, SloError
from runfmt.writer import RECORDED_TABLES


@dataclass
class Repair:
    run_dir: Path
    rows: dict[str, int] = field(default_factory=dict)  # per table, on disk
    events: dict[str, int] = field(default_factory=dict)  # kernel_events rows per signal
    damaged: list[str] = field(default_factory=list)  # parts that could not be read, left out
    removed_tmp: list[str] = field(default_factory=list)  # half-written temporary parts, deleted


def _count(run_dir: Path, repair: Repair) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for table in RECORDED_TABLES:
        folder = run_dir / table
        for tmp in sorted(folder.glob(".part-*.tmp")):  # a write the kill interrupted
            tmp.unlink()
            repair.removed_tmp.append(str(tmp))
        names, rows = [], 0
        for part in sorted(folder.glob("part-*.parquet")):
            try:
                meta = pq.read_metadata(part)
                if table == "kernel_events":
                    signals = pq.read_table(part, columns=["signal"])["signal"]
                    for row in pc.value_counts(signals).to_pylist():
                        repair.events[row["values"]] = repair.events.get(row["values"], 0) + row["counts"]
            except Exception as exc:  # pyarrow raises several types for a damaged file
                repair.damaged.append(f"{part}: {exc}")
                continue
            names.append(part.name)
            rows += meta.num_rows
        files[table] = names
        repair.rows[table] = rows
    return files


def repair_run(run_dir: Path) -> Repair:
    """Rewrites the manifest of a cut run from its parts; SloError when there is nothing to repair."""
    run_dir = Path(run_dir)
    path = run_dir / M.MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}", "a run directory holds manifest.json; pass one") from None
    state = M.run_state(run_dir, manifest)
    if state == "recording":
        raise SloError(f"{run_dir} is being recorded now", "wait for the recorder to finish, or stop it first")
    if state != "cut":
        raise SloError(f"{run_dir} is not cut: it finished recording", "nothing to repair")
    repair = Repair(run_dir)
    files = _count(run_dir, repair)
    counters = manifest.get("counters") or {}
    for name in set(counters) | set(repair.events):
        c = counters.setdefault(name, {})
        written = repair.events.get(name, 0)
        # what the kernel saw is unknown past the last manifest; never less than what is on disk
        c["seen"] = max(c.get("seen", 0), written)
        c["written"] = written
    otlp = manifest.get("otlp") or {}
    if otlp.get("enabled"):
        otlp["spans_written"] = repair.rows.get("spans", 0)
    manifest.update(
        state="cut", complete=False, counters=counters, files=files, otlp=otlp,
        stop_reason="cut: the recorder stopped without finishing (killed or crashed); "
                    "manifest rebuilt from the parts on disk by slocap repair",
        repaired={"at": M.iso_now(), "rows": repair.rows, "damaged_parts": repair.damaged,
                  "removed_temporary_parts": repair.removed_tmp},
    )
    M.write_manifest(run_dir, manifest)
    return repair
