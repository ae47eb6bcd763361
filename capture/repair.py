"""slocap repair: a cut run's manifest rebuilt from the parts on disk.

A recorder killed with SIGKILL (or a machine that stopped) leaves a manifest
that still says state "recording", written when the last part was closed. The
parts themselves are always whole (runfmt/writer.py writes them under a hidden
name and renames them), so the truth is on disk: repair counts it.

Such a run also keeps the OTLP requests it received as they came (otlp_raw: the
recorder flattens them into spans only when the recording ends). Repair flattens
them the same way (capture/span_flatten.py) before it counts, and the manifest
then says otlp.spans_state "final". It does so for a finished run whose
flattening failed too, without calling it cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from capture.span_flatten import FlattenResult, flatten_raw, raw_parts
from capture.spans import AttributeLimits
from runfmt import manifest as M
from runfmt.errors import DataError, SloError
from runfmt.schema import TABLES
from runfmt.writer import RECORDED_TABLES, PartWriter


@dataclass
class Repair:
    run_dir: Path
    rows: dict[str, int] = field(default_factory=dict)  # per table, on disk
    events: dict[str, int] = field(default_factory=dict)  # kernel_events rows per signal
    damaged: list[str] = field(default_factory=list)  # parts that could not be read, left out
    removed_tmp: list[str] = field(default_factory=list)  # half-written temporary parts, deleted
    flattened: FlattenResult | None = None  # the otlp_raw requests made spans, when there were any


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


def _flatten(run_dir: Path, manifest: dict, repair: Repair) -> None:
    """The otlp_raw requests of the run into spans, with the limits and part size it was recorded with."""
    for tmp in sorted((run_dir / "otlp_raw").glob(".part-*.tmp")):  # a write the kill interrupted
        tmp.unlink()
        repair.removed_tmp.append(str(tmp))
    config = manifest.get("config") or {}
    max_rows = (config.get("capture") or {}).get("part_max_rows", 200_000)
    writers = [PartWriter(run_dir / t, TABLES[t][0], max_rows=max_rows, max_seconds=float("inf"))
               for t in ("spans", "span_resources")]
    repair.flattened = flatten_raw(run_dir, *writers, AttributeLimits.from_config(config.get("otlp") or {}))


def _spans_final(otlp: dict, repair: Repair) -> None:
    """The manifest's otlp once repair flattened the requests: the cuts of the attribute
    limits and the flattening's cost are of what it flattened (a recorder cut while it
    flattened took the counts of the parts it had done with it)."""
    f = repair.flattened
    if f is None:
        return
    otlp.update(spans_state="final", attributes_dropped=f.attributes_dropped, values_truncated=f.values_truncated,
                flatten={**f.to_manifest(), "by": "slocap repair"})
    named = {d.split(": ", 1)[0] for d in repair.damaged}
    repair.damaged += [d for d in f.damaged if d.split(": ", 1)[0] not in named]


def repair_run(run_dir: Path) -> Repair:
    """Rewrites the manifest of a cut run from its parts, its OTLP requests flattened into
    spans first; of a finished run whose spans are still raw, only flattens those. SloError
    when there is nothing to repair."""
    run_dir = Path(run_dir)
    path = run_dir / M.MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}", "a run directory holds manifest.json; pass one") from None
    state = M.run_state(run_dir, manifest)
    if state == "recording":
        raise SloError(f"{run_dir} is being recorded now", "wait for the recorder to finish, or stop it first")
    otlp = manifest.get("otlp") or {}
    raw = bool(raw_parts(run_dir))
    if state != "cut" and not raw:
        raise SloError(f"{run_dir} is not cut: it finished recording", "nothing to repair")
    repair = Repair(run_dir)
    if raw:
        _flatten(run_dir, manifest, repair)
    if state != "cut":  # finished, but its flattening had failed: the rest of it is true
        files = _count(run_dir, repair)
        _spans_final(otlp, repair)
        otlp["spans_written"] = repair.rows.get("spans", 0)
        manifest.update(files=files, otlp=otlp,
                        repaired={"at": M.iso_now(), "rows": repair.rows, "damaged_parts": repair.damaged,
                                  "removed_temporary_parts": repair.removed_tmp, "spans_flattened": True})
        M.write_manifest(run_dir, manifest)
        return repair
    files = _count(run_dir, repair)
    counters = manifest.get("counters") or {}
    for name in set(counters) | set(repair.events):
        c = counters.setdefault(name, {})
        written = repair.events.get(name, 0)
        # what the kernel saw is unknown past the last manifest; never less than what is on disk
        c["seen"] = max(c.get("seen", 0), written)
        c["written"] = written
    if otlp.get("enabled"):
        otlp["spans_written"] = repair.rows.get("spans", 0)
        _spans_final(otlp, repair)
    manifest.update(
        state="cut", complete=False, counters=counters, files=files, otlp=otlp,
        stop_reason="cut: the recorder stopped without finishing (killed or crashed); "
                    "manifest rebuilt from the parts on disk by slocap repair",
        repaired={"at": M.iso_now(), "rows": repair.rows, "damaged_parts": repair.damaged,
                  "removed_temporary_parts": repair.removed_tmp},
    )
    M.write_manifest(run_dir, manifest)
    return repair
