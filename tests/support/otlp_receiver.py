"""An OTLP receiver in a process of its own, storing spans as `slocap record` does, so a
test can measure the memory of taking spans and nothing else (tests/reliability/).

    python tests/support/otlp_receiver.py RUN_DIR [--config FILE]

Receives on free loopback ports with the config's otlp section; spans and their resources
go to part writers in RUN_DIR, rotated at capture.part_max_rows like the recorder's
(runfmt/writer.py). Prints {"pid", "http_port", "grpc_port"} as one JSON line when ready.
Then each line read on stdin is a command: `flush` writes the open parts and prints the
receiver's counters as a JSON line. End of input stops the receiver.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
from pathlib import Path

import pyarrow as pa

from capture.otlp import OtlpReceiver
from capture.spans import AttributeLimits
from runfmt.config import load_config
from runfmt.writer import RunWriters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args()
    cfg = load_config(args.config)
    otlp, capture = cfg["otlp"], cfg["capture"]
    writers = RunWriters(args.run_dir, max_rows=capture["part_max_rows"], max_seconds=capture["part_max_seconds"])
    lock = threading.Lock()

    def store(table_name: str):
        def add(table: pa.Table) -> None:
            with lock:
                writers[table_name].add(table)
        return add

    receiver = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", otlp["max_request_bytes"], store("spans"),
                            on_resources=store("span_resources"), limits=AttributeLimits.from_config(otlp))
    receiver.start()
    print(json.dumps({"pid": os.getpid(), "http_port": receiver.http_port, "grpc_port": receiver.grpc_port}),
          flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "flush":
                with lock:
                    writers.flush("spans", "span_resources")
                print(json.dumps(dataclasses.asdict(receiver.counters)), flush=True)
    finally:
        receiver.stop()
        with lock:
            writers.flush("spans", "span_resources")


if __name__ == "__main__":
    main()
