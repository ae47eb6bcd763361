"""BCC degraded mode: the same records as the CO-RE probes, from real triggers."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading

import numpy as np
import pyarrow as pa
import pytest
from tests.support.triggers import SENDER, SINK

from capture import columns as S
from capture.bcc import BCC_SIGNALS, SOURCE_DIR, BccSignal, bcc_available, kernel_source
from capture.bpfobj import BpfObject
from capture.signals import SIGNALS
from replay.netns import HostPair, drop_ingress_every
from runfmt import schema
from runfmt.errors import CaptureError

RING = 1 << 20


def _bcc_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    reason = bcc_available()
    return f"BCC unusable here: {reason}" if reason else None


# in CI they must run (as conftest does for kernel tests): a skip would hide a broken set-up
needs_bcc = pytest.mark.skipif(_bcc_skip_reason() is not None and not os.environ.get("CI"),
                               reason=f"kernel test: {_bcc_skip_reason()}")


@pytest.fixture
def loaded():
    """`loaded("dns", ...)` → a BccSignal, closed after the test."""
    probes = []

    def load(name, ring_bytes=RING, wakeup_bytes=RING // 2, **settings):
        probe = BccSignal(SIGNALS[name], ring_bytes=ring_bytes, wakeup_bytes=wakeup_bytes,
                          settings=settings)
        probes.append(probe)
        return probe

    yield load
    for probe in probes:
        probe.close()


def _table(name: str, records: np.ndarray) -> pa.Table:
    """What the recorder's drain makes of a batch, minus the clock anchor."""
    n = len(records)
    columns = SIGNALS[name].to_columns(records)
    columns["ts_ns"] = records["ts_ns"].astype(np.int64)
    columns["signal"] = S.constant(name, n, pa.string())
    return S.kernel_events_table(columns, n)


def _lookup_in_thread(host: str) -> int:
    """getaddrinfo(host) in a new thread; returns that thread's kernel id."""
    out = {}

    def target():
        out["tid"] = threading.get_native_id()
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)

    t = threading.Thread(target=target)
    t.start()
    t.join(10)
    return out["tid"]


# -- without the kernel ---------------------------------------------------

def test_a_signal_without_a_bcc_variant_is_refused_with_the_known_ones():
    with pytest.raises(CaptureError) as err:
        BccSignal(SIGNALS["connect"], ring_bytes=RING, wakeup_bytes=RING // 2)
    assert err.value.message == "signal 'connect' has no BCC variant"
    assert err.value.hint == "BCC records dns, retransmit; record the others on a kernel with BTF"


def test_a_header_tree_that_is_not_one_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    assert kernel_source() is None
    reason = bcc_available()
    assert reason is not None
    if not reason.startswith("cannot import bcc"):
        assert reason == f"BCC_KERNEL_SOURCE={tmp_path} is not a kernel header tree (no include/linux/kconfig.h)"


def test_every_bcc_signal_has_a_source_and_a_core_signal():
    for name, probe in BCC_SIGNALS.items():
        assert name in SIGNALS
        assert (SOURCE_DIR / probe.source).is_file()


@pytest.mark.skipif(bcc_available() is not None and not os.environ.get("CI"),
                    reason=f"BCC unusable here: {bcc_available()}")
def test_a_struct_that_drifted_from_the_core_object_does_not_compile(monkeypatch):
    real = BpfObject.struct_dtype

    def one_field_short(self, struct):
        dtype = real(self, struct)
        return np.dtype({"names": list(dtype.names[:-1]),
                         "formats": [dtype.fields[n][0] for n in dtype.names[:-1]],
                         "offsets": [dtype.fields[n][1] for n in dtype.names[:-1]],
                         "itemsize": dtype.itemsize - 8})

    monkeypatch.setattr(BpfObject, "struct_dtype", one_field_short)
    with pytest.raises(CaptureError) as err:
        BccSignal(SIGNALS["dns"], ring_bytes=RING, wakeup_bytes=RING // 2)
    assert "struct dns_event differs from dns.bpf.o" in err.value.message


# -- in the kernel ----------------------------------------------------------

@pytest.mark.kernel
@needs_bcc
def test_dns_lookup_of_a_known_name_is_recorded(loaded):
    probe = loaded("dns", min_latency_ns=0)
    assert probe.hooks[0].startswith("bcc:uprobe:") and probe.hooks[0].endswith(":getaddrinfo")
    assert probe.hooks[1].startswith("bcc:uretprobe:")
    tid = _lookup_in_thread("localhost")
    records = probe.read()
    table = _table("dns", records)
    assert table.schema.equals(schema.KERNEL_EVENTS)
    rows = [r for r in table.to_pylist() if r["tid"] == tid]
    assert rows, f"no dns record for thread {tid}; read: {table.to_pylist()}"
    row = rows[0]
    assert row["detail"] == "localhost"
    assert row["pid"] == os.getpid()
    assert row["value_ns"] > 0
    assert row["errno"] == 0
    assert row["comm"]
    assert row["trace_id"] is None  # no trace stamping in BCC mode
    assert probe.dropped() == 0


@pytest.mark.kernel
@needs_bcc
def test_dns_min_latency_filters_in_the_kernel(loaded):
    probe = loaded("dns", min_latency_ns=60 * 10**9)
    _lookup_in_thread("localhost")
    assert len(probe.read()) == 0


@pytest.mark.kernel
@needs_bcc
def test_a_full_ring_counts_what_it_dropped(loaded):
    probe = loaded("dns", ring_bytes=4096, wakeup_bytes=4096)
    lookups = 60
    for _ in range(lookups):
        socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
    records = probe.read()
    # one page holds this many records; other processes' lookups count too
    assert len(records) <= 4096 // (probe.dtype.itemsize + 8)
    mine = records[records["pid"] == os.getpid()]
    assert probe.dropped() >= lookups - len(mine)


@pytest.mark.kernel
@needs_bcc
def test_the_ring_wakes_the_drain_only_past_the_threshold(loaded):
    # a ring large enough that other processes' lookups do not reach its threshold
    quiet = loaded("dns", ring_bytes=1 << 24, wakeup_bytes=1 << 24)
    eager = loaded("dns", wakeup_bytes=0)
    poller = select.epoll()
    poller.register(quiet.ring_fd, select.EPOLLIN | select.EPOLLET)
    poller.register(eager.ring_fd, select.EPOLLIN | select.EPOLLET)
    try:
        # registering reports what other processes' lookups left since load: clear it
        poller.poll(0)
        quiet.read(), eager.read()
        tid = _lookup_in_thread("localhost")
        woken = {fd for fd, _ in poller.poll(2)}
    finally:
        poller.close()
    assert eager.ring_fd in woken
    assert quiet.ring_fd not in woken
    assert tid in quiet.read()["tid"]  # there all the same, for the timed drain


@pytest.mark.kernel
@needs_bcc
def test_load_shedding_tunables_and_the_rate_limit_act_in_the_kernel(loaded):
    limited = loaded("dns", rate_limit=3, rate_burst=3)
    shed = loaded("dns")
    shed.tune(sample_shift=31, unknown_knob=1)  # keeps 1 event in 2^31; unknown names are ignored
    lookups = 40
    for _ in range(lookups):
        socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
    mine = shed.read()
    assert not (mine["pid"] == os.getpid()).any()
    assert shed.sampled_out() >= lookups
    # at most 3 per 1/8 s window, and the loop may straddle a few windows
    assert len(limited.read()) <= 3 * 8
    assert limited.sampled_out() > 0
    assert set(shed.obj.program_fds()) == {"getaddrinfo_enter", "getaddrinfo_exit"}
    ns, runs = shed.run_stats()  # zero unless kernel.bpf_stats_enabled
    assert ns >= 0 and runs >= 0


@pytest.mark.kernel
@needs_bcc
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_retransmit_from_receiver_side_drops_has_the_right_tuple(loaded, v6):
    probe = loaded("retransmit")
    assert probe.hooks == ["bcc:tracepoint/tcp/tcp_retransmit_skb"]
    with HostPair() as hosts:
        server_ip = hosts.server_ip6 if v6 else hosts.server_ip
        client_ip = hosts.client_ip6 if v6 else hosts.client_ip
        server = hosts.popen(hosts.server_ns, ["python3", "-c", SINK, server_ip],
                             stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        drop_ingress_every(hosts.server_ns, 4, tcp_dport=port)
        client = hosts.popen(hosts.client_ns, ["python3", "-c", SENDER, server_ip, str(port)],
                             stdout=subprocess.PIPE, text=True)
        sport = int(client.stdout.readline().split()[0])
        assert client.wait(30) == 0
        assert int(server.stdout.readline()) == 200_000
    table = _table("retransmit", probe.read())
    assert table.schema.equals(schema.KERNEL_EVENTS)
    rows = [r for r in table.to_pylist() if r["dport"] == port and r["sport"] == sport]
    assert len(rows) >= 5, f"expected retransmits of {client_ip}:{sport} → {server_ip}:{port}"
    for row in rows:
        assert (row["saddr"], row["daddr"]) == (client_ip, server_ip)
        assert row["family"] == (socket.AF_INET6 if v6 else socket.AF_INET)
        assert row["detail"] in ("ESTABLISHED", "FIN_WAIT1", "SYN_SENT")
        assert row["cgroup_id"] == 0  # unknown without struct sock's layout
    assert probe.dropped() == 0
