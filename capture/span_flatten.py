"""A run's spans from the OTLP requests it received: otlp_raw parts -> spans, span_resources.

While recording, the receiver only parses an export request and checks its ids
(capture/otlp.py), and the recorder keeps the body as it came, one row of the otlp_raw
table (`raw_table`, built once per part). Flattening (capture/spans.py `flatten`: typed columns, the attribute
limits, each resource once) was most of the intake's CPU, so it waits for the recording
to end: `slocap record` runs `flatten_raw` once its receiver has stopped and the last
otlp_raw part is written, and `slocap repair` does for a run cut before that. Its CPU is
reported in the manifest (`otlp.flatten`), outside the recording's overhead.

Memory stays bounded: one otlp_raw part is read at a time, a few bodies of it at once
(a part holds at most 32 MiB of buffered bodies plus one, runfmt/writer.py), one body is
parsed and flattened at a time, and the span writers close parts at their own bounds.

Exactly once, even when cut: the span parts made from an otlp_raw part are written,
tagged with its name in their metadata, before that part is removed. A run cut in between
still holds the raw part; the next flattening first removes the span parts tagged with
it, then makes them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from capture.otlp import RawRequest, parse_request
from capture.spans import DEFAULT_LIMITS, AttributeLimits, Flattened, flatten
from runfmt.errors import DataError
from runfmt.schema import OTLP_RAW
from runfmt.writer import PartWriter

log = logging.getLogger(__name__)

RAW = "otlp_raw"  # the table, and its folder in a run
SOURCE = "otlp_raw_part"  # a span part's metadata: the otlp_raw part it was made from
_BATCH_ROWS = 16  # bodies read from a part at once


def raw_table(raws: Sequence[RawRequest]) -> pa.Table:
    """otlp_raw rows: the requests as they came, one row each. Built once per part, not
    per request: an Arrow table costs about as much CPU as parsing the request. The
    bodies are joined into one buffer in a single copy (a part holds at most
    MAX_BUFFER_BYTES of them, runfmt/writer.py, so 32-bit offsets hold)."""
    bodies = [r.body for r in raws]
    offsets = np.zeros(len(bodies) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in bodies], out=offsets[1:])
    body = pa.Array.from_buffers(pa.binary(), len(bodies), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(bodies))])
    return pa.Table.from_arrays([pa.array([r.arrival_ns for r in raws], pa.int64()),
                                 pa.array([r.protocol for r in raws], pa.string()),
                                 pa.array([r.media_type for r in raws], pa.string()), body], schema=OTLP_RAW)


def flatten_body(content_type: str, body: bytes, limits: AttributeLimits = DEFAULT_LIMITS) -> Flattened:
    """One stored export body as the run's tables; DataError when it is not one."""
    return flatten(parse_request(body, content_type), limits)


def raw_parts(run_dir: Path) -> list[Path]:
    """The run's otlp_raw parts, in the order they were written."""
    return sorted((Path(run_dir) / RAW).glob("part-*.parquet"))


@dataclass
class FlattenResult:
    requests: int = 0  # bodies read
    spans: int = 0  # rows given to the spans writer
    attributes_dropped: int = 0  # past otlp.attribute_count_limit, of spans and resources
    values_truncated: int = 0  # cut to otlp.attribute_value_length_limit
    malformed: int = 0  # bodies that did not flatten, left out (the receiver checked them: none expected)
    cpu_s: float = 0.0  # CPU of the process while flattening: reading, flattening, span parts written
    parts: list[str] = field(default_factory=list)  # otlp_raw parts flattened, then removed
    damaged: list[str] = field(default_factory=list)  # otlp_raw parts not readable (whole): left in place
    redone: list[str] = field(default_factory=list)  # span parts of a cut flattening, removed and made again

    def add(self, other: FlattenResult) -> None:
        """Adds the counts of another flattening (not its lists)."""
        for name in ("requests", "spans", "attributes_dropped", "values_truncated", "malformed", "cpu_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_manifest(self) -> dict:
        """The manifest's otlp.flatten."""
        return {"requests": self.requests, "spans": self.spans, "cpu_s": round(self.cpu_s, 4),
                "us_per_request": round(self.cpu_s * 1e6 / self.requests, 1) if self.requests else None,
                "malformed": self.malformed, "damaged_parts": self.damaged}


class _Damaged(Exception):
    pass


def _bodies(part: Path) -> Iterator[tuple[str, bytes]]:
    """(content type, body) of each row of an otlp_raw part, in order; _Damaged when it
    cannot be read (errors of the caller's loop body pass through untouched)."""
    try:
        batches = pq.ParquetFile(part).iter_batches(batch_size=_BATCH_ROWS, columns=["content_type", "body"])
    except (OSError, pa.ArrowException) as exc:  # pyarrow raises several types for a damaged file
        raise _Damaged(str(exc)) from None
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:
            raise _Damaged(str(exc)) from None
        types, bodies = batch.column(0), batch.column(1)
        for i in range(batch.num_rows):
            yield types[i].as_py(), bodies[i].as_py()


def _remove_partial(run_dir: Path, raw_names: set[str]) -> list[str]:
    """Removes the span parts made from otlp_raw parts that are still there: the run was cut
    while flattening them, and they are made again whole."""
    removed = []
    for table in ("spans", "span_resources"):
        for part in sorted((run_dir / table).glob("part-*.parquet")):
            try:
                metadata = pq.read_schema(part).metadata or {}
            except (OSError, pa.ArrowException):
                continue  # damaged: slocap repair names it
            if metadata.get(SOURCE.encode(), b"").decode() in raw_names:
                part.unlink()
                removed.append(str(part))
    return removed


def flatten_raw(run_dir: Path, spans: PartWriter, resources: PartWriter,
                limits: AttributeLimits = DEFAULT_LIMITS) -> FlattenResult:
    """Flattens the run's otlp_raw parts, one at a time and in order, into the spans and
    span_resources writers; after each, writes their parts and removes it, and at the end
    the emptied folder. A part that cannot be read is named in `damaged` and left in place."""
    run_dir = Path(run_dir)
    cpu0 = time.process_time()
    result = FlattenResult()
    parts = raw_parts(run_dir)
    if parts:
        result.redone = _remove_partial(run_dir, {p.name for p in parts})
    spans.flush()  # what they hold already was not made from these parts
    resources.flush()
    try:
        for part in parts:
            spans.part_metadata = resources.part_metadata = {SOURCE: part.name}
            damaged = None
            try:
                for content_type, body in _bodies(part):
                    result.requests += 1
                    try:
                        flat = flatten_body(content_type, body, limits)
                    except DataError as exc:
                        result.malformed += 1
                        log.warning("%s: a body of %d bytes left out: %s", part, len(body), exc.message)
                        continue
                    if flat.num_spans:
                        resources.add(flat.resources)
                        spans.add(flat.spans)
                    result.spans += flat.num_spans
                    result.attributes_dropped += flat.attributes_dropped
                    result.values_truncated += flat.values_truncated
            except _Damaged as exc:
                damaged = f"{part}: {exc}"
            spans.flush()  # what was read of a damaged part is kept, tagged with it
            resources.flush()
            if damaged is None:
                part.unlink()
                result.parts.append(part.name)
            else:
                result.damaged.append(damaged)
    finally:
        spans.part_metadata = resources.part_metadata = {}
        result.cpu_s = time.process_time() - cpu0
    try:
        (run_dir / RAW).rmdir()  # only when empty
    except OSError:
        pass
    return result
