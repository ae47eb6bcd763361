"""A small mixed workload that makes every recorded signal fire: DNS lookups
(some failing), TCP connects (some refused), and a transfer with receiver-side
drops between two lab namespaces, so TCP really retransmits.

Used by `make demo` beside `slocap record`. Bounded in time; cleans up.

    python -m replay.traffic --seconds 8
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time

from replay.netns import HostPair, drop_ingress_every

SINK = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(); s.settimeout(30)
print(s.getsockname()[1], flush=True)
while True:
    try:
        c, _ = s.accept()
    except OSError:
        break
    c.settimeout(10)
    while c.recv(65536):
        pass
    c.close()
"""

SOURCE = """
import socket, sys, time
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(50):
        c.sendall(b"x" * 1000)
    c.close()
"""


def local_traffic(seconds: float) -> dict[str, int]:
    """Lookups and connects on loopback, a few per 100 ms."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    open_port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    counts = {"lookups": 0, "failed_lookups": 0, "connects": 0, "refused": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
        counts["lookups"] += 1
        try:
            socket.getaddrinfo("no-such-host", None, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            counts["failed_lookups"] += 1
        with socket.create_connection(("127.0.0.1", open_port), timeout=2):
            counts["connects"] += 1
        listener.accept()[0].close()
        try:
            socket.create_connection(("127.0.0.1", closed_port), timeout=2).close()
        except ConnectionRefusedError:
            counts["refused"] += 1
        time.sleep(0.1)
    listener.close()
    return counts


def lossy_transfer(seconds: float, drop_every: int = 5) -> None:
    """Client → server in lab namespaces, every Nth segment dropped at the server."""
    with HostPair() as hosts:
        sink = hosts.popen(hosts.server_ns, ["python3", "-c", SINK, hosts.server_ip],
                           stdout=subprocess.PIPE, text=True)
        port = int(sink.stdout.readline())
        drop_ingress_every(hosts.server_ns, drop_every, tcp_dport=port)
        source = hosts.popen(hosts.client_ns, ["python3", "-c", SOURCE, hosts.server_ip, str(port), str(seconds)])
        source.wait(seconds + 30)


def main() -> None:
    ap = argparse.ArgumentParser(description="Mixed workload that makes every signal fire.")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--delay", type=float, default=0.0, help="wait this long first (recorder start-up)")
    a = ap.parse_args()
    time.sleep(a.delay)
    pid = os.fork() if os.geteuid() == 0 else -1
    if pid == 0:  # the lossy transfer needs root for its namespaces
        try:
            lossy_transfer(a.seconds)
        finally:
            os._exit(0)
    counts = local_traffic(a.seconds)
    if pid > 0:
        os.waitpid(pid, 0)
    print("traffic: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + ("" if pid > 0 else " (no lossy transfer: needs root)"), flush=True)


if __name__ == "__main__":
    main()
