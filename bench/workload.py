#!/usr/bin/env python3
"""Reference workload for the overhead benchmark (until the lab's baseline
profile exists): a fixed NUMBER of operations, heavy in DNS lookups, TCP
connects, context switches and some TLS handshakes, all on loopback.

One operation = getaddrinfo(name) -> connect -> 64-byte request -> 512-byte
response -> close. Every `--tls-every`-th operation (by a seeded shuffle) goes
to a TLS port and does a full handshake (no session resumption). N client
threads share the operations; a server child process answers them with a pool
of blocking accept() threads per port, so every operation wakes threads in
two processes. Its cost is read as CPU time of this process tree (the server
is a child that this process waits for) and as wall time.

DNS, two modes:
  --dns stub   a UDP DNS responder on 127.0.0.1:53 answers A queries for
               --name with 127.0.0.1; glibc really sends a query per lookup.
               Only inside a network namespace whose /etc/resolv.conf names
               127.0.0.1 alone (`ip netns exec NS`, with
               /etc/netns/NS/resolv.conf): checked, so no query leaves the host.
  --dns hosts  getaddrinfo("localhost") answered from /etc/hosts (no packet).

Usage: .venv/bin/python bench/workload.py [--ops 4000] [--threads 8] [--dns hosts]
Prints one JSON line: operations done, failures, wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NAME = "svc.slobench.test"
REQUEST_BYTES = 64
RESPONSE = bytes(range(256)) * 2  # 512 bytes, fixed
SERVER_THREADS = 8


# -- a self-signed certificate ------------------------------------------------

def make_cert(directory: Path, names: tuple[str, ...] = (NAME, "localhost")) -> tuple[Path, Path]:
    """cert.pem + key.pem (EC P-256, self-signed) made with `openssl req -x509`."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


# -- server side (a child process) --------------------------------------------

def _dns_answer(query: bytes) -> bytes | None:
    """A record 127.0.0.1 for an A query; an empty NOERROR answer for anything else."""
    if len(query) < 12:
        return None
    qid, _flags, qd = struct.unpack("!HHH", query[:6])
    if qd != 1:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    end += 5  # zero label, qtype, qclass
    if end > len(query):
        return None
    question = query[12:end]
    qtype = struct.unpack("!H", question[-4:-2])[0]
    answers = b""
    if qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton("127.0.0.1")
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1 if answers else 0, 0, 0) + question + answers


def _serve_dns(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(512)
        reply = _dns_answer(data)
        if reply:
            sock.sendto(reply, peer)


def _serve_tcp(listener: socket.socket, context: ssl.SSLContext | None) -> None:
    while True:
        conn, _ = listener.accept()
        try:
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            got = b""
            while not got.endswith(b"\n"):
                chunk = conn.recv(1024)
                if not chunk:
                    break
                got += chunk
            conn.sendall(RESPONSE)
        except OSError:
            pass
        finally:
            conn.close()


def serve(cert: Path, key: Path, dns: bool) -> None:
    """Listen, print the ports as one JSON line, serve until stdin closes."""
    threads = []
    ports = {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for kind, ctx in (("tcp", None), ("tls", context)):
        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        ports[kind] = listener.getsockname()[1]
        threads += [threading.Thread(target=_serve_tcp, args=(listener, ctx), daemon=True)
                    for _ in range(SERVER_THREADS)]
    if dns:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 53))
        threads.append(threading.Thread(target=_serve_dns, args=(udp,), daemon=True))
    for t in threads:
        t.start()
    print(json.dumps(ports), flush=True)
    sys.stdin.read()  # until the client side closes our stdin
    os._exit(0)


# -- client side --------------------------------------------------------------

def plan(ops: int, threads: int, tls_every: int, seed: int) -> list[list[bool]]:
    """Per thread, a list of operations (True = TLS). Exactly ops // tls_every
    TLS operations, placed by a seeded shuffle; the same every run."""
    n_tls = ops // tls_every if tls_every else 0
    kinds = [True] * n_tls + [False] * (ops - n_tls)
    random.Random(seed).shuffle(kinds)
    return [kinds[i::threads] for i in range(threads)]


def resolver_is_local(path: Path = Path("/etc/resolv.conf")) -> bool:
    """True when the resolver config names 127.0.0.1 and nothing else."""
    try:
        servers = [ln.split()[1] for ln in path.read_text().splitlines()
                   if ln.strip().startswith("nameserver") and len(ln.split()) > 1]
    except OSError:
        return False
    return servers == ["127.0.0.1"]


def _one(name: str, port: int, context: ssl.SSLContext | None) -> None:
    family, stype, proto, _, addr = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0]
    with socket.socket(family, stype, proto) as sock:
        sock.connect(addr)
        conn = context.wrap_socket(sock, server_hostname=name) if context is not None else sock
        conn.sendall((b"GET /%d\n" % port).rjust(REQUEST_BYTES))
        got = 0
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += len(chunk)
        if got != len(RESPONSE):
            raise OSError(f"short response: {got} bytes")
        if conn is not sock:
            conn.close()


def run(ops: int, threads: int, tls_every: int, seed: int, dns: str, cert_dir: Path | None) -> dict:
    if dns == "stub" and not resolver_is_local():
        raise SystemExit("workload: --dns stub needs a network namespace whose /etc/resolv.conf "
                         "names only 127.0.0.1 (ip netns exec NS ..., with /etc/netns/NS/resolv.conf); "
                         "use --dns hosts outside one")
    made = None
    if cert_dir is None:
        made = Path(tempfile.mkdtemp(prefix="slobench-cert-"))
        cert_dir = made
        make_cert(cert_dir)
    cert = cert_dir / "cert.pem"
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--cert-dir", str(cert_dir),
                               "--dns", dns], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(server.stdout.readline())
        name = NAME if dns == "stub" else "localhost"
        client_ctx = ssl.create_default_context(cafile=str(cert))
        work = plan(ops, threads, tls_every, seed)
        failures: list[str] = []
        lock = threading.Lock()

        def worker(kinds: list[bool]) -> None:
            for is_tls in kinds:
                try:
                    _one(name, ports["tls"] if is_tls else ports["tcp"], client_ctx if is_tls else None)
                except OSError as exc:
                    with lock:
                        failures.append(repr(exc))

        pool = [threading.Thread(target=worker, args=(w,)) for w in work]
        t0 = time.monotonic()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.monotonic() - t0
    finally:
        server.stdin.close()
        server.wait()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return {"ops": ops, "tls_ops": sum(sum(w) for w in work), "threads": threads, "dns": dns,
            "failures": len(failures), "first_failure": failures[0] if failures else None,
            "ops_wall_s": round(wall, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=4000, help="operations in all (default 4000)")
    ap.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    ap.add_argument("--tls-every", type=int, default=10, help="one TLS operation in N (default 10; 0 = none)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dns", choices=("stub", "hosts"), default="hosts")
    ap.add_argument("--cert-dir", type=Path, help="holds cert.pem + key.pem (default: made now in a temp dir)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.cert_dir / "cert.pem", a.cert_dir / "key.pem", a.dns == "stub")
        return 0
    print(json.dumps(run(a.ops, a.threads, a.tls_every, a.seed, a.dns, a.cert_dir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
