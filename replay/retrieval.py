"""The RAG path's retrieval service: plain HTTP, seeded latency, really slept.

    POST /retrieve {"query": "...", "k": 4}  ->  {"documents": [...], "latency_ms": ...}

The latency is lognormal (median ~40 ms) drawn from (seed, request id), and the
documents from (seed, query), so repeated requests answer alike.

    python -m replay.retrieval --listen 127.0.0.1:8081

Fault (POST /admin/fault): {"kind": "slowdown", "extra_ms": 400} adds latency
to every request; {"kind": "none"} clears.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from opentelemetry.trace import Span

from replay.telemetry import (
    Faults, LabHandler, LabHTTPServer, configure_logging, fault_spec, format_hostport, service_parser,
    pseudo_words, request_id_of, run_until_signal, seeded_rng, setup_tracing,
)

__all__ = ["RetrievalConfig", "documents", "draw_latency_s", "main", "make_server"]

MEDIAN_S = 0.040
SIGMA = 0.35
MAX_K = 50


def draw_latency_s(seed: int, request_id: str) -> float:
    return seeded_rng(seed, "retrieval", request_id).lognormvariate(math.log(MEDIAN_S), SIGMA)


def documents(seed: int, query: str, k: int) -> list[dict[str, Any]]:
    rng = seeded_rng(seed, "documents", query)
    docs = []
    score = 1.0
    for _ in range(k):
        score *= rng.uniform(0.8, 0.99)  # descending, as a ranker returns them
        docs.append({"id": f"doc-{rng.randrange(100_000):05d}", "score": round(score, 4),
                     "text": " ".join(pseudo_words(rng, rng.randint(20, 40)))})
    return docs


@dataclass(frozen=True)
class RetrievalConfig:
    time_scale: float  # 0 skips the sleep (overhead measurements)


class RetrievalHandler(LabHandler):
    routes: ClassVar[Mapping[tuple[str, str], str]] = {("POST", "/retrieve"): "retrieve"}

    def retrieve(self) -> None:
        self.serve_in_span("POST /retrieve", "/retrieve", self._retrieve)

    def _retrieve(self, span: Span) -> int:
        raw = self.read_body()
        try:
            body = json.loads(raw)
            query, k = str(body["query"]), int(body.get("k", 4))
            if not 0 < k <= MAX_K:
                raise ValueError(f"k must be in 1..{MAX_K}, got {k}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.send_json(400, {"error": f'expected {{"query": str, "k": int}}: {exc!r}'})
            return 400
        rid = request_id_of(self.headers, raw)
        latency = draw_latency_s(self.server.seed, rid)
        fault = self.server.faults.get("slowdown")
        if fault:
            latency += fault["extra_ms"] / 1000
            span.set_attribute("lab.fault", "slowdown")
        span.set_attributes({"lab.request_id": rid, "lab.retrieval.k": k, "lab.latency_s": latency})
        time.sleep(latency * self.server.config.time_scale)
        self.send_json(200, {"request_id": rid, "latency_ms": round(latency * 1000, 3),
                             "documents": documents(self.server.seed, query, k)})
        return 200


def make_server(address: tuple[str, int], *, seed: int, provider: Any,
                config: RetrievalConfig) -> LabHTTPServer:
    faults = Faults({"slowdown": fault_spec(extra_ms=(None, 0, 600_000))})
    return LabHTTPServer(address, RetrievalHandler, faults=faults, provider=provider, seed=seed,
                         config=config)


def main(argv: list[str] | None = None) -> None:
    parser = service_parser("replay.retrieval", __doc__, "retrieval")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiplies the sleep; 0 measures pure overhead")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    provider = setup_tracing(args.service_name, args.otlp_endpoint)
    server = make_server(args.listen, seed=args.seed, provider=provider,
                         config=RetrievalConfig(args.time_scale))
    run_until_signal([server], format_hostport(server.server_address), provider)


if __name__ == "__main__":
    main()
