"""The recorder's manifest tells the truth at any instant: after kill -9, on a full
disk, with its OTLP port taken, and when it listens beyond loopback."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

SLOCAP = str(Path(sys.executable).parent / "slocap")
SLOAN = str(Path(sys.executable).parent / "sloan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, **sections) -> Path:
    """A config on free OTLP ports, so a recorder elsewhere on the host does not collide."""
    otlp = {"endpoint": f"127.0.0.1:{_free_port()}", "grpc_endpoint": f"127.0.0.1:{_free_port()}"}
    cfg = {"otlp": {**otlp, **sections.pop("otlp", {})}, **sections}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _wait_for(predicate, proc, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited early ({what}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        socket.getaddrinfo("localhost", 80)  # events keep parts rotating
        time.sleep(0.005)


def _rows(run_dir: Path, table: str) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (run_dir / table).glob("part-*.parquet"))


@pytest.mark.kernel
def test_after_kill_9_the_run_reads_cut_and_repair_counts_what_is_on_disk(tmp_path):
    """kill -9 mid-recording: the manifest lists the parts on disk, every sloan command says cut, slocap repair recounts them."""
    out = tmp_path / "runs"
    cfg = _config(tmp_path, capture={"part_max_seconds": 0.3})
    proc = subprocess.Popen([SLOCAP, "record", "--out", str(out), "--config", str(cfg), "--signals", "dns"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(list(out.glob("tag=*/scenario=*/run=*/kernel_events/part-*.parquet"))) >= 3,
                  proc, 60, "three kernel_events parts")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.communicate()
    (run_dir,) = out.glob("tag=*/scenario=*/run=*")

    # the manifest was rewritten with every part: it lists parts that exist, with their counts
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["state"] == "recording"
    listed = manifest["files"]["kernel_events"]
    on_disk = sorted(p.name for p in (run_dir / "kernel_events").glob("part-*.parquet"))
    assert listed and set(listed) <= set(on_disk)
    listed_rows = sum(pq.read_metadata(run_dir / "kernel_events" / n).num_rows for n in listed)
    assert manifest["counters"]["dns"]["written"] == listed_rows

    # every sloan command says the run was cut
    for args in (["sql", "SELECT count(*) AS n FROM kernel_events"], ["correlate"]):
        done = subprocess.run([SLOAN, *args, "--runs", str(run_dir)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "was cut" in done.stderr, (args, done.stderr)

    done = subprocess.run([SLOCAP, "repair", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = _rows(run_dir, "kernel_events")
    assert f"kernel_events {rows:,} rows" in done.stdout
    repaired = json.loads((run_dir / "manifest.json").read_text())
    assert repaired["state"] == "cut" and repaired["complete"] is False
    assert repaired["counters"]["dns"]["written"] == rows
    assert repaired["files"]["kernel_events"] == on_disk
    assert repaired["repaired"]["rows"]["kernel_events"] == rows
    n = subprocess.run([SLOAN, "sql", "SELECT count(*) AS n FROM kernel_events", "--runs", str(run_dir),
                        "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert list(csv.reader(n.stdout.splitlines())) == [["n"], [str(rows)]] and "was cut" in n.stderr

    again = subprocess.run([SLOCAP, "repair", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and f"kernel_events {rows:,} rows" in again.stdout  # idempotent


def _export_body(n: int, first: int) -> bytes:
    """An OTLP/protobuf export of n spans, span ids first, first + 1 ..."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    spans = [Span(trace_id=bytes(range(16)), span_id=(first + i).to_bytes(8, "big"), name=f"s{first + i}",
                  start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_000_001_000,
                  attributes=[KeyValue(key="app.seq", value=AnyValue(int_value=first + i))]) for i in range(n)]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="svc")),
                                    KeyValue(key="env", value=AnyValue(string_value="lab"))])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[
        ScopeSpans(spans=spans)])]).SerializeToString()


def _post(port: int, body: bytes) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.kernel
def test_after_kill_9_the_raw_otlp_requests_are_kept_and_repair_flattens_them(tmp_path):
    """kill -9 while recording spans: the requests taken are on disk raw (otlp_raw), every sloan command says so, slocap repair flattens them once."""
    out = tmp_path / "runs"
    port = _free_port()
    cfg = _config(tmp_path, otlp={"endpoint": f"127.0.0.1:{port}"}, capture={"part_max_seconds": 0.3})
    proc = subprocess.Popen([SLOCAP, "record", "--out", str(out), "--config", str(cfg), "--signals", "dns"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: list(out.glob("tag=*/scenario=*/run=*/manifest.json")), proc, 60, "the run")
        (run_dir,) = out.glob("tag=*/scenario=*/run=*")
        for i in range(6):
            assert _post(port, _export_body(50, 1 + 50 * i)) == 200
        sent = 6 * 50

        def all_raw_on_disk() -> bool:
            parts = list((run_dir / "otlp_raw").glob("part-*.parquet"))
            return sum(pq.read_metadata(p).num_rows for p in parts) == 6 and json.loads(
                (run_dir / "manifest.json").read_text())["otlp"]["raw_requests_written"] == 6

        _wait_for(all_raw_on_disk, proc, 30, "the requests in otlp_raw parts")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.communicate()

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["state"], manifest["otlp"]["spans_state"]) == ("recording", "raw")
    assert manifest["otlp"]["spans_received"] == sent and manifest["otlp"]["spans_written"] == 0
    assert not list((run_dir / "spans").glob("part-*.parquet"))
    raw_warning = f"run {run_dir}: its spans are still raw OTLP bodies: run `slocap repair {run_dir}`"
    done = subprocess.run([SLOAN, "sql", "SELECT count(*) AS n FROM spans", "--runs", str(run_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "was cut" in done.stderr and f"warning: {raw_warning}" in done.stderr.splitlines(), done.stderr

    done = subprocess.run([SLOCAP, "repair", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "spans flattened from 6 raw OTLP request(s)" in done.stdout and f"{sent} spans" in done.stdout
    assert f"spans {sent} rows" in done.stdout and "otlp_raw 0 rows" in done.stdout
    repaired = json.loads((run_dir / "manifest.json").read_text())
    otlp = repaired["otlp"]
    assert (repaired["state"], otlp["spans_state"], otlp["spans_written"]) == ("cut", "final", sent)
    assert (otlp["flatten"]["requests"], otlp["flatten"]["spans"], otlp["flatten"]["by"]) == (6, sent, "slocap repair")
    assert repaired["files"]["otlp_raw"] == [] and not (run_dir / "otlp_raw").exists()
    spans = pq.read_table(run_dir / "spans", partitioning=None).to_pylist()
    assert sorted(int(s["span_id"], 16) for s in spans) == list(range(1, sent + 1))  # each once
    resources = pq.read_table(run_dir / "span_resources", partitioning=None).to_pylist()
    assert [dict(r["attributes"]) for r in resources] == [{"resource.env": "lab"}] * 6
    done = subprocess.run([SLOAN, "sql", "SELECT count(*) AS n FROM spans", "--runs", str(run_dir),
                           "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert list(csv.reader(done.stdout.splitlines())) == [["n"], [str(sent)]]
    assert "was cut" in done.stderr and "raw OTLP" not in done.stderr

    again = subprocess.run([SLOCAP, "repair", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and f"spans {sent} rows" in again.stdout  # idempotent
    assert "flattened" not in again.stdout


@pytest.mark.kernel
def test_repair_refuses_a_run_that_finished_or_is_being_recorded(tmp_path):
    """slocap repair on a finished run or one being recorded: a one-line refusal, nothing changed."""
    from runfmt.manifest import hold_recording, write_manifest

    run_dir = tmp_path / "run=x"
    run_dir.mkdir()
    write_manifest(run_dir, {"run_id": "x", "state": "finished", "complete": True})
    done = subprocess.run([SLOCAP, "repair", str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 1 and "is not cut" in done.stderr and "Traceback" not in done.stderr
    write_manifest(run_dir, {"run_id": "x", "state": "recording"})
    fd = hold_recording(run_dir)
    try:
        done = subprocess.run([SLOCAP, "repair", str(run_dir)], capture_output=True, text=True)
    finally:
        os.close(fd)
    assert done.returncode == 1 and "is being recorded now" in done.stderr


@pytest.mark.kernel
def test_a_busy_otlp_port_fails_at_start_and_leaves_no_run(tmp_path):
    """A busy OTLP port: a one-line error at start and no run left behind; --otlp-optional records without spans."""
    out = tmp_path / "runs"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = _config(tmp_path, otlp={"endpoint": f"127.0.0.1:{port}"})
        done = subprocess.run([SLOCAP, "record", "--out", str(out), "--config", str(cfg), "--duration", "1",
                               "--signals", "dns"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout
        lines = done.stderr.splitlines()
        assert lines[0].startswith("error: cannot receive spans:") and f"{port}" in lines[0], done.stderr
        assert "--otlp-optional" in done.stderr and "Traceback" not in done.stderr
        assert not list(out.glob("tag=*/scenario=*/run=*"))

        done = subprocess.run([SLOCAP, "record", "--out", str(out), "--config", str(cfg), "--duration", "1",
                               "--signals", "dns", "--otlp-optional"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no spans were received" in done.stdout
    (run_dir,) = out.glob("tag=*/scenario=*/run=*")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["otlp"]["enabled"] is False and str(port) in manifest["otlp"]["error"]


@pytest.mark.kernel
def test_an_otlp_bind_beyond_loopback_is_warned_and_recorded(tmp_path):
    """OTLP bound to 0.0.0.0: a warning on stderr and otlp.exposed in the manifest."""
    port = _free_port()
    cfg = _config(tmp_path, otlp={"endpoint": f"0.0.0.0:{port}"})
    done = subprocess.run([SLOCAP, "record", "--out", str(tmp_path / "runs"), "--config", str(cfg),
                           "--duration", "1", "--signals", "dns"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"warning: OTLP endpoint 0.0.0.0:{port} listens beyond this host" in done.stderr
    (run_dir,) = (tmp_path / "runs").glob("tag=*/scenario=*/run=*")
    assert json.loads((run_dir / "manifest.json").read_text())["otlp"]["exposed"] == [f"0.0.0.0:{port}"]


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs, so a recording can fill it in seconds."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (root needed): {done.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.kernel
def test_a_full_disk_loses_at_most_the_rows_since_the_last_part_and_says_how_many(tmp_path, small_disk):
    """A full disk (tmpfs): one-line ENOSPC error naming the rows not written (about a second's), every part whole."""
    # free space is under low_space_bytes from the start: parts close every second
    cfg = _config(tmp_path, capture={"part_max_seconds": 60, "low_space_bytes": 64 << 20})
    out = small_disk / "runs"
    proc = subprocess.Popen([SLOCAP, "record", "--out", str(out), "--config", str(cfg), "--signals", "dns",
                             "--duration", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: list(out.glob("tag=*/scenario=*/run=*/manifest.json")), proc, 30, "the run")
        (small_disk / "filler").write_bytes(b"")
        with open(small_disk / "filler", "wb") as f:  # fill what is left
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        deadline = time.monotonic() + 60
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the recorder did not notice the full disk"
            socket.getaddrinfo("localhost", 80)
            time.sleep(0.002)
        stdout, stderr = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == 1, stdout
    first = stderr.splitlines()[0]
    assert "No space left on device" in first and "rows not written:" in first, stderr
    assert "Traceback" not in stderr
    (run_dir,) = out.glob("tag=*/scenario=*/run=*")
    for part in (run_dir / "kernel_events").glob("part-*.parquet"):
        pq.read_table(part)  # every part on disk is whole
    lost = first.split("rows not written:")[1]
    # about one second of lookups at most (this loop does a few hundred per second)
    n_lost = sum(int(tok.replace(",", "")) for tok in lost.split() if tok.replace(",", "").isdigit())
    assert n_lost < 5000, first
