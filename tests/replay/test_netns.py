"""Kernel tests of the lab's test hosts: real namespaces, veths and nft drops.

Every child process is bounded by a timeout, so a broken network makes a test
fail in seconds instead of hanging the suite.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replay.netns import HostPair, cleanup_leftovers, clear_drops, drop_ingress_every
from runfmt.errors import CaptureError

_MISSING = [tool for tool in ("ip", "nft", "ethtool", "nstat") if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
    pytest.mark.skipif(bool(_MISSING), reason=f"missing tools: {', '.join(_MISSING)}"),
]

TIMEOUT_S = 30.0

# listens on argv[1] (port chosen by the kernel), reads until EOF, answers with
# the byte count; prints "port P", "peer ADDR PORT", "received N"
SERVER = r"""
import socket, sys
host = sys.argv[1]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as ls:
    ls.bind((host, 0))
    ls.listen(1)
    ls.settimeout(20)
    print("port", ls.getsockname()[1], flush=True)
    conn, peer = ls.accept()
    conn.settimeout(20)
    print("peer", peer[0], peer[1], flush=True)
    n = 0
    while chunk := conn.recv(65536):
        n += len(chunk)
    conn.sendall(str(n).encode())
    conn.close()
    print("received", n, flush=True)
"""

# connects to argv[1]:argv[2], sends argv[3] bytes in argv[4]-byte writes;
# prints "connect_s S", "local_port P", "sent N", "acked N"
CLIENT = r"""
import socket, sys, time
host, port, total, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.monotonic()
s = socket.create_connection((host, port), timeout=20)
print("connect_s", time.monotonic() - t0, flush=True)
print("local_port", s.getsockname()[1], flush=True)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = b"x" * size
sent = 0
while sent < total:
    s.sendall(buf[: total - sent])
    sent += min(size, total - sent)
s.shutdown(socket.SHUT_WR)
ack = b""
while chunk := s.recv(64):
    ack += chunk
print("sent", sent, flush=True)
print("acked", ack.decode(), flush=True)
"""


def _parse(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


def _start_server(pair: HostPair, host: str) -> tuple[subprocess.Popen[str], int]:
    """Start SERVER in the server namespace; return it once it listens."""
    proc = pair.popen(
        pair.server_ns,
        [sys.executable, "-c", SERVER, host],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("port "):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        pytest.fail(f"server did not start listening on {host} within 10 s: {line!r} {err}")
    return proc, int(line.split()[1])


def _finish(proc: subprocess.Popen[str], what: str) -> dict[str, list[str]]:
    """Wait (bounded) for a helper and return its parsed output."""
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        pytest.fail(f"{what} still running after {TIMEOUT_S:.0f} s: {out} {err}")
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}): {err}"
    return _parse(out)


def _client(
    pair: HostPair, host: str, port: int, total: int = 0, size: int = 1000
) -> dict[str, list[str]]:
    proc = pair.popen(
        pair.client_ns,
        [sys.executable, "-c", CLIENT, host, str(port), str(total), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return _finish(proc, "client")


def _retrans_segs(pair: HostPair, ns: str) -> int:
    # -a absolute values, -z also zeros, -s leave nstat's history file alone
    done = pair.run(
        ns, ["nstat", "-asz", "TcpRetransSegs"], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    return int(_parse(done.stdout)["TcpRetransSegs"][0])


def _nft_ruleset(pair: HostPair) -> str:
    done = pair.run(
        pair.server_ns, ["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _namespaces() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_server_accepts_client_across_the_veth(family: str) -> None:
    with HostPair() as pair:
        assert {pair.client_ns, pair.server_ns} <= _namespaces()
        if family == "ipv4":
            server_ip, client_ip = pair.server_ip, pair.client_ip
        else:
            server_ip, client_ip = pair.server_ip6, pair.client_ip6
        server, port = _start_server(pair, server_ip)
        client = _client(pair, server_ip, port, total=1000)
        served = _finish(server, "server")
        # usable at once: no wait for DAD or for the link's carrier (see wait_link_up)
        assert float(client["connect_s"][0]) < 0.5
        # the server saw the client's own address and port: it came over the veth
        assert served["peer"] == [client_ip, client["local_port"][0]]
        assert served["received"] == ["1000"] and client["acked"] == ["1000"]


def test_two_pairs_coexist() -> None:
    with HostPair() as a, HostPair() as b:
        assert len({a.client_ns, a.server_ns, b.client_ns, b.server_ns}) == 4
        assert a.client_ip != b.client_ip and a.client_ip6 != b.client_ip6
        for pair in (a, b):
            server, port = _start_server(pair, pair.server_ip)
            _client(pair, pair.server_ip, port)
            _finish(server, "server")


def test_receiver_drops_cause_real_retransmits() -> None:
    total = 200_000
    with HostPair() as pair:
        server, port = _start_server(pair, pair.server_ip)
        drop_ingress_every(pair.server_ns, 4, tcp_dport=port)
        before = _retrans_segs(pair, pair.client_ns)
        # 1000-byte writes with TCP_NODELAY: ~200 segments, a quarter dropped
        client = _client(pair, pair.server_ip, port, total=total, size=1000)
        after = _retrans_segs(pair, pair.client_ns)
        served = _finish(server, "server")
        assert served["received"] == [str(total)] and client["acked"] == [str(total)]
        # the first SYN is dropped too (one retransmit); data drops add many more
        print(f"TcpRetransSegs +{after - before}")
        assert after - before >= 10, f"TcpRetransSegs grew by only {after - before}"


def test_dropped_syn_delays_connect_by_the_initial_rto() -> None:
    with HostPair() as pair:
        server, port = _start_server(pair, pair.server_ip)
        # n=2 with syn_only: the counter starts at 0, so the first SYN (0 mod 2)
        # is dropped and its retransmit (1 mod 2) passes. Deterministic, unlike
        # removing an n=1 rule from a timer thread. The server is already
        # listening (it printed its port) and nothing else has sent a SYN.
        drop_ingress_every(pair.server_ns, 2, tcp_dport=port, syn_only=True)
        before = _retrans_segs(pair, pair.client_ns)
        client = _client(pair, pair.server_ip, port)
        after = _retrans_segs(pair, pair.client_ns)
        _finish(server, "server")
        delay = float(client["connect_s"][0])
        print(f"connect took {delay:.3f} s with the first SYN dropped")
        # Linux retransmits a SYN after 1 s
        assert 0.9 <= delay < 2.5, f"connect took {delay:.3f} s, expected one SYN retransmit (~1 s)"
        assert after - before == 1


def test_drop_three_of_four_syns_costs_three_retransmits() -> None:
    with HostPair() as pair:
        server, port = _start_server(pair, pair.server_ip)
        # drop 3 of every 4: the SYN and its first two retransmits (counts 0, 1, 2) are
        # dropped and the third (count 3) passes. The first SYN retransmits are 1 s apart
        # (net.ipv4.tcp_syn_linear_timeouts, 4 by default since Linux 6.5); before it, backoff
        # doubled (1 + 2 + 4 s)
        drop_ingress_every(pair.server_ns, 4, tcp_dport=port, syn_only=True, drop=3)
        before = _retrans_segs(pair, pair.client_ns)
        client = _client(pair, pair.server_ip, port)
        after = _retrans_segs(pair, pair.client_ns)
        _finish(server, "server")
        delay = float(client["connect_s"][0])
        assert 2.9 <= delay < 8.5, f"connect took {delay:.3f} s, expected three SYN retransmits (3 to 7 s)"
        assert after - before == 3


def test_drop_rules_are_idempotent() -> None:
    with HostPair() as pair:
        drop_ingress_every(pair.server_ns, 4, tcp_dport=80)
        drop_ingress_every(pair.server_ns, 2, tcp_sport=443, syn_only=True)
        ruleset = _nft_ruleset(pair)
        # the second call replaced the first rule
        assert ruleset.count("numgen inc mod") == 1 and "tcp sport 443" in ruleset
        clear_drops(pair.server_ns)
        clear_drops(pair.server_ns)
        assert "slo_lab" not in _nft_ruleset(pair)
        with pytest.raises(ValueError):
            drop_ingress_every(pair.server_ns, 0)


def test_exit_removes_both_namespaces() -> None:
    with HostPair() as pair:
        names = {pair.client_ns, pair.server_ns}
        sleeper = pair.popen(pair.server_ns, ["sleep", "60"])
    assert sleeper.returncode is not None, "a process started with popen outlived the pair"
    assert not names & _namespaces()
    assert not any(Path("/run/netns", name).exists() for name in names)


def test_exit_removes_both_namespaces_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with HostPair() as pair:
            names = {pair.client_ns, pair.server_ns}
            raise RuntimeError("boom")
    assert not names & _namespaces()


def test_failed_creation_removes_what_was_made() -> None:
    pair = HostPair()
    # occupy the server's name, so creation fails after the client namespace exists
    subprocess.run(["ip", "netns", "add", pair.server_ns], check=True, timeout=10)
    try:
        with pytest.raises(CaptureError, match=f"'ip netns add {pair.server_ns}' failed"):
            with pair:
                pass
        assert pair.client_ns not in _namespaces()
        assert pair.server_ns in _namespaces(), "must not delete a namespace it did not make"
    finally:
        subprocess.run(["ip", "netns", "delete", pair.server_ns], check=True, timeout=10)


def test_cleanup_leftovers_removes_prefixed_namespaces() -> None:
    # a prefix unique to this run: the default "slo-" would also delete the
    # namespaces of another lab run on this machine
    prefix = f"slo-leftover-{os.getpid()}-"
    name = f"{prefix}x"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        assert cleanup_leftovers(prefix) == [name]
        assert name not in _namespaces()
        assert cleanup_leftovers(prefix) == []
    finally:
        if name in _namespaces():
            subprocess.run(["ip", "netns", "delete", name], check=True, timeout=10)
