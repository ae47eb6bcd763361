"""Shared fixtures: a recorder running in a thread while a test triggers events."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capture import preflight

# ci_guard (tests/ci_guard.py): in CI, a skipped test fails the run
pytest_plugins = ["ci_guard", "pytester"]

OBJECT_DIR = Path(__file__).resolve().parents[1] / "capture" / "_bpf"


def kernel_ready() -> str | None:
    """None when kernel tests can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not preflight.BTF_PATH.exists():
        return "needs kernel BTF"
    if not preflight.tracefs_mounted():
        return "tracefs not mounted (make setup mounts it)"
    if not any(OBJECT_DIR.glob("*.bpf.o")):
        return "probes not built (make bpf)"
    return None


def pytest_collection_modifyitems(config, items):
    # in CI kernel tests must run: a skip there would hide a broken set-up
    reason = kernel_ready()
    if reason is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"kernel tests cannot run in CI: {reason}")
    skip = pytest.mark.skip(reason=f"kernel test: {reason}")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@dataclass
class Recording:
    run_dir: Path
    otlp_endpoint: str | None = None  # host:port of the recorder's OTLP/HTTP receiver
    result: object = None
    events: pa.Table | None = None
    _rows: list[dict] = field(default_factory=list)

    def rows(self, signal: str) -> list[dict]:
        return [r for r in self.events.to_pylist() if r["signal"] == signal]


def read_events(run_dir: Path) -> pa.Table:
    parts = sorted((run_dir / "kernel_events").glob("part-*.parquet"))
    if not parts:
        from runfmt.schema import KERNEL_EVENTS
        return KERNEL_EVENTS.empty_table()
    return pa.concat_tables(pq.read_table(p) for p in parts)


@pytest.fixture
def recording(tmp_path):
    """`with recording(["dns"]) as rec:` trigger inside; rec.events after the block."""
    from capture.recorder import Recorder, RecordOptions, Stop
    from runfmt.config import load_config

    @contextmanager
    def start(signals, variant="auto", safety=None, pods_file=None, cgroup=None, **capture_overrides):
        cfg = load_config()
        cfg["capture"].update(capture_overrides)
        # free ports: a recorder or lab elsewhere on the host must not fail the test at start
        cfg["otlp"].update(endpoint="127.0.0.1:0", grpc_endpoint="127.0.0.1:0")
        cfg["safety"].update(safety or {})
        rec = Recorder(RecordOptions(runs_root=tmp_path / "runs", signals=tuple(signals), config=cfg,
                                     variant=variant, pods_file=pods_file, cgroup=cgroup))
        stop, ready, outcome = Stop(), threading.Event(), {}

        def target():
            try:
                outcome["result"] = rec.run(stop, on_ready=lambda _d: ready.set())
            except BaseException as exc:  # surfaced in the test thread below
                outcome["error"] = exc
                ready.set()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        assert ready.wait(30), "recorder did not start within 30 s"
        if "error" in outcome:
            raise outcome["error"]
        session = Recording(rec.run_dir, f"127.0.0.1:{rec.receiver.http_port}" if rec.receiver else None)
        try:
            yield session
        finally:
            stop.request("test finished")
            thread.join(30)
        if "error" in outcome:
            raise outcome["error"]
        session.result = outcome["result"]
        session.events = read_events(rec.run_dir)

    return start


@pytest.fixture
def sloan():
    """sloan in-process: `sloan("score", "--runs", path)` -> click's Result."""
    from click.testing import CliRunner

    from analyze.cli import main

    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])
