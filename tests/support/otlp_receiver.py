"""An OTLP receiver in a process of its own, storing spans as `slocap record` does, so a
test can measure the memory of taking spans and nothing else (tests/reliability/).

    python tests/support/otlp_receiver.py RUN_DIR [--config FILE]

Receives on free loopback ports with the config's otlp section; each request taken goes to
the otlp_raw part writer in RUN_DIR as it came, rotated at capture.part_max_rows like the
recorder's (runfmt/writer.py). Prints {"pid", "http_port", "grpc_port"} as one JSON line when
ready. Then each line read on stdin is a command: `flush` writes the open otlp_raw part,
flattens the raw parts into spans and span_resources parts as the recorder does when a
recording ends (capture/span_flatten.py, with the config's attribute limits), and prints the
receiver's counters with the flattening's (attributes_dropped, values_truncated, flattened_*)
as a JSON line. End of input stops the receiver and flattens what is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
from pathlib import Path

from capture.otlp import OtlpReceiver, RawRequest
from capture.span_flatten import FlattenResult, flatten_raw, raw_table
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
    limits = AttributeLimits.from_config(otlp)
    lock = threading.Lock()
    flattened = FlattenResult()

    def on_request(raw: RawRequest) -> None:
        table = raw_table([raw])
        with lock:
            writers["otlp_raw"].add(table)

    def flatten() -> None:
        with lock:
            writers.flush("otlp_raw")
            flattened.add(flatten_raw(args.run_dir, writers["spans"], writers["span_resources"], limits))

    receiver = OtlpReceiver("127.0.0.1:0", "127.0.0.1:0", otlp["max_request_bytes"], on_request)
    receiver.start()
    print(json.dumps({"pid": os.getpid(), "http_port": receiver.http_port, "grpc_port": receiver.grpc_port}),
          flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "flush":
                flatten()
                print(json.dumps({**dataclasses.asdict(receiver.counters),
                                  "attributes_dropped": flattened.attributes_dropped,
                                  "values_truncated": flattened.values_truncated,
                                  "flattened_requests": flattened.requests, "flattened_spans": flattened.spans}),
                      flush=True)
    finally:
        receiver.stop()
        flatten()


if __name__ == "__main__":
    main()
