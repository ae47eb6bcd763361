"""Each signal end to end: a real trigger, the recorded row checked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from tests.support.triggers import SENDER, SINK

from replay.netns import HostPair, drop_ingress_every
from runfmt.contracts import probe_event_from_row, validate

pytestmark = pytest.mark.kernel


def _in_thread(fn):
    """Runs fn in a new thread; returns (its result, its kernel thread id)."""
    out = {}

    def target():
        out["tid"] = threading.get_native_id()
        out["value"] = fn()

    t = threading.Thread(target=target)
    t.start()
    t.join(10)
    return out["value"], out["tid"]


def test_dns_lookup_of_a_known_name_is_recorded(recording):
    with recording(["dns"]) as rec:
        _, tid = _in_thread(lambda: socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM))
    rows = [r for r in rec.rows("dns") if r["tid"] == tid]
    assert rows, f"no dns row for thread {tid}; recorded: {rec.rows('dns')}"
    row = rows[0]
    assert row["detail"] == "localhost"
    assert row["pid"] == os.getpid()
    assert row["value_ns"] > 0
    assert row["errno"] == 0
    assert row["comm"]
    # the wall clock is anchored: the event lies within this test's lifetime
    assert abs(row["ts_ns"] - time.time_ns()) < 60e9
    event = probe_event_from_row(row)
    validate("v1alpha1/probe-event", event)
    assert (event["unit"], event["status"], event["tid"]) == ("ms", "ok", tid)


def test_failed_dns_lookup_carries_the_eai_code(recording):
    name = "not-a-numeric-host"
    with recording(["dns"]) as rec:
        with pytest.raises(socket.gaierror) as err:
            socket.getaddrinfo(name, None, flags=socket.AI_NUMERICHOST)
    rows = [r for r in rec.rows("dns") if r["detail"] == name and r["pid"] == os.getpid()]
    assert len(rows) == 1
    assert rows[0]["errno"] == err.value.errno  # EAI_NONAME, negative in glibc


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_connect_to_a_listening_port_records_latency(recording, family, host, variant):
    server = socket.socket(family)
    server.bind((host, 0))
    server.listen()
    port = server.getsockname()[1]
    with recording(["connect"], variant=variant) as rec:
        client = socket.socket(family)
        client.connect((host, port))
        sport = client.getsockname()[1]
        client.close()
    server.close()
    rows = [r for r in rec.rows("connect") if r["dport"] == port]
    assert len(rows) == 1, rec.rows("connect")
    row = rows[0]
    assert row["detail"] == "ESTABLISHED"
    assert row["errno"] == 0
    assert row["value_ns"] > 0
    assert (row["saddr"], row["daddr"], row["sport"]) == (host, host, sport)
    assert row["family"] == family
    assert row["pid"] == os.getpid()
    hooks = json.loads((rec.run_dir / "manifest.json").read_text())["capability"]["signals"]["connect"]["hooks"]
    assert hooks == [f"{variant}/inet_sock_set_state"]


def test_connect_to_a_closed_port_records_the_failure(recording):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with recording(["connect"]) as rec:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    rows = [r for r in rec.rows("connect") if r["dport"] == port]
    assert len(rows) == 1, rec.rows("connect")
    row = rows[0]
    assert row["detail"] == "CLOSE"
    assert row["errno"] == 111  # ECONNREFUSED
    assert row["value_ns"] > 0
    assert row["pid"] == os.getpid()
    assert row["sport"] is None  # the port was released before the CLOSE transition
    event = probe_event_from_row(row)
    validate("v1alpha1/probe-event", event)
    assert (event["status"], event["errno"]) == ("error", 111)


def _cgroup_v2_id(pid: int) -> int:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return os.stat("/sys/fs/cgroup/unified" + line[3:]).st_ino
    raise AssertionError("process has no cgroup-v2 entry")


@pytest.mark.parametrize("variant", ["tp_btf", "raw_tp"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_retransmit_from_receiver_side_drops_has_the_right_tuple(recording, v6, variant):
    with HostPair() as hosts, recording(["retransmit"], variant=variant) as rec:
        server_ip = hosts.server_ip6 if v6 else hosts.server_ip
        client_ip = hosts.client_ip6 if v6 else hosts.client_ip
        server = hosts.popen(hosts.server_ns, ["python3", "-c", SINK, server_ip],
                             stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        drop_ingress_every(hosts.server_ns, 4, tcp_dport=port)
        client = hosts.popen(hosts.client_ns, ["python3", "-c", SENDER, server_ip, str(port)],
                             stdout=subprocess.PIPE, text=True)
        sport, client_pid = map(int, client.stdout.readline().split())
        cgroup_id = _cgroup_v2_id(client_pid)
        assert client.wait(30) == 0
        assert int(server.stdout.readline()) == 200_000
    rows = [r for r in rec.rows("retransmit") if r["dport"] == port and r["sport"] == sport]
    assert len(rows) >= 5, f"expected retransmits of {client_ip}:{sport} → {server_ip}:{port}"
    for row in rows:
        assert (row["saddr"], row["daddr"]) == (client_ip, server_ip)
        assert row["family"] == (socket.AF_INET6 if v6 else socket.AF_INET)
        assert row["cgroup_id"] == cgroup_id
        assert row["detail"] in ("ESTABLISHED", "FIN_WAIT1", "SYN_SENT")
        validate("v1alpha1/probe-event", probe_event_from_row(row))
