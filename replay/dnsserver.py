"""The lab's authoritative DNS server (UDP and TCP), with an injectable delay.

Answers A and AAAA for the lab's names (NOERROR with no answer when a name has
no address of that family), NXDOMAIN for any other name. Every query runs in its
own thread, so a delayed query never holds up another.

    python -m replay.dnsserver --listen 127.0.0.1:5353 --admin 127.0.0.1:8053 \\
        --record retrieval.lab=198.18.100.12 [--zone zone.json]

zone.json: {"retrieval.lab": "198.18.100.12", "backend.lab": ["198.18.100.13", "fd00::13"]}

Fault (POST /admin/fault on --admin): {"kind": "delay", "ms": 250} holds every
answer that long; {"kind": "none"} clears. Prints `ready HOST:PORT` (the DNS
address), then `admin HOST:PORT` when --admin is given.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer
from opentelemetry.trace import SpanKind

from replay.telemetry import (
    Faults, LabHandler, LabHTTPServer, configure_logging, fault_spec, format_hostport, service_parser,
    parse_hostport, run_until_signal, setup_tracing,
)

__all__ = ["LabResolver", "load_zone", "main"]

log = logging.getLogger("replay.dns")

Zone = dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]
TTL_S = 5  # short: a changed zone shows quickly, yet answers are cacheable in principle


def _name(text: str) -> str:
    return text.rstrip(".").lower()


def load_zone(zone_file: Path | None, records: Iterable[str]) -> Zone:
    """Names -> addresses, from a JSON file and name=ip pairs (pairs add to the file)."""
    raw: dict[str, Any] = json.loads(zone_file.read_text()) if zone_file else {}
    pairs = [r.split("=", 1) for r in records]
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"--record wants name=ip, got {'='.join(pair)!r}")
    zone: Zone = {}
    for name, value in [*raw.items(), *pairs]:
        values = [value] if isinstance(value, str) else list(value)
        zone.setdefault(_name(name), []).extend(ipaddress.ip_address(v) for v in values)
    return zone


class LabResolver(BaseResolver):
    def __init__(self, zone: Zone, faults: Faults, tracer: Any) -> None:
        self.zone, self.faults, self.tracer = zone, faults, tracer

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        qname, qtype = _name(str(request.q.qname)), QTYPE.get(request.q.qtype)
        with self.tracer.start_as_current_span("dns query", kind=SpanKind.SERVER, attributes={
                "dns.question.name": qname, "dns.question.type": str(qtype),
                "network.transport": handler.protocol,
                "client.address": handler.client_address[0],
                "client.port": handler.client_address[1]}) as span:
            fault = self.faults.get("delay")
            if fault:
                span.set_attribute("lab.fault", "delay")
                time.sleep(fault["ms"] / 1000)
            reply = request.reply()  # authoritative answer, id and question copied
            addresses = self.zone.get(qname)
            if addresses is None:
                reply.header.rcode = RCODE.NXDOMAIN
            for addr in addresses or ():
                if addr.version == 4 and qtype in ("A", "ANY"):
                    reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(str(addr)), ttl=TTL_S))
                elif addr.version == 6 and qtype in ("AAAA", "ANY"):
                    reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(str(addr)),
                                        ttl=TTL_S))
            span.set_attribute("dns.response_code", RCODE.get(reply.header.rcode))
            span.set_attribute("lab.answers", len(reply.rr))
            return reply


class _QuietLogger:
    """dnslib prints every query to stdout by default; stdout carries only `ready`."""

    def __getattr__(self, name: str) -> Any:
        return self._log

    def _log(self, handler: Any, *args: Any) -> None:
        log.debug("%s %s", handler.client_address, args)


def main(argv: list[str] | None = None) -> None:
    parser = service_parser("replay.dnsserver", __doc__, "lab-dns")
    parser.add_argument("--zone", type=Path, help="JSON object: name -> address or [addresses]")
    parser.add_argument("--record", action="append", default=[], metavar="NAME=IP")
    parser.add_argument("--admin", type=parse_hostport, metavar="HOST:PORT",
                        help="HTTP listener for /healthz and /admin/fault")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        zone = load_zone(args.zone, args.record)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot load the zone: {exc}")
    provider = setup_tracing(args.service_name, args.otlp_endpoint)
    faults = Faults({"delay": fault_spec(ms=(None, 0, 60_000))})
    resolver = LabResolver(zone, faults, provider.get_tracer("replay.dns"))
    host, port = args.listen
    udp = DNSServer(resolver, address=host, port=port, logger=_QuietLogger())
    port = udp.server.server_address[1]  # port 0 -> the one the kernel chose, for TCP too
    tcp = DNSServer(resolver, address=host, port=port, tcp=True, logger=_QuietLogger())
    servers: list[Any] = [udp.server, tcp.server]
    extra = []
    if args.admin:
        admin = LabHTTPServer(args.admin, LabHandler, faults=faults, provider=provider,
                              seed=args.seed)
        servers.append(admin)
        extra.append(f"admin {format_hostport(admin.server_address)}")
    run_until_signal(servers, format_hostport(udp.server.server_address), provider, extra)


if __name__ == "__main__":
    main()
