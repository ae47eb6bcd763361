"""Fault injectors: the registry, and each fault really injected into a lab.

The lab's real services are stood in for by small scripts: a TCP sink for the
packet faults, an idle process for the cgroup faults, and an admin endpoint
that prints what it was sent for the faults the lab's servers hold.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replay.faults import MIXED, SCENARIOS, Combined, Fault, build
from replay.topology import Topology
from runfmt.contracts import load_contract
from runfmt.errors import CaptureError, ConfigError

_MISSING = [tool for tool in ("ip", "nft", "ethtool", "nstat", "openssl") if shutil.which(tool) is None]

kernel = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, nft rules and cgroups"),
    pytest.mark.skipif(bool(_MISSING), reason=f"missing tools: {', '.join(_MISSING)}"),
]

INDEX = 50 + os.getpid() % 50
TIMEOUT_S = 30.0

# the ground truth the scenarios must write, from the brief
DOMAINS = {
    "dns_latency": ("network_dns", "dns"),
    "tcp_loss": ("network_egress", "backend"),
    "connect_stall": ("network_egress", "backend"),
    "tls_slowdown": ("network_egress", "backend"),
    "cpu_contention": ("cpu_throttle", "gateway"),
    "provider_throttle": ("provider_throttle", "backend"),
    "provider_error": ("provider_error", "backend"),
    "retrieval_slowdown": ("retrieval_backend", "retrieval"),
    "memory_pressure": ("memory_pressure", "backend"),
}
# enough for every factory to build without a running lab
OFFLINE = {"dns_latency": {"admin_url": "http://198.18.100.11:8053/admin/fault"},
           "tls_slowdown": {"admin_url": "https://198.18.100.13:8443/admin/fault"},
           "provider_throttle": {"admin_url": "https://198.18.100.13:8443/admin/fault"},
           "provider_error": {"admin_url": "https://198.18.100.13:8443/admin/fault"},
           "retrieval_slowdown": {"admin_url": "http://198.18.100.12:8081/admin/fault"},
           "tcp_loss": {"port": 8443}, "connect_stall": {"port": 8443}}


# -- the registry (no lab needed) -------------------------------------------------------


def test_every_scenario_is_labelled_with_a_v1_fault_domain() -> None:
    enum = load_contract("v1/incident-attribution")["$defs"]["fault_domain"]["enum"]
    topo = Topology()
    assert set(SCENARIOS) == set(DOMAINS)
    for name in SCENARIOS:
        fault = build(name, topo, OFFLINE.get(name))
        assert isinstance(fault, Fault) and fault.scenario == name
        domain, target = DOMAINS[name]
        intensity = json.dumps(SCENARIOS[name].defaults, sort_keys=True)
        assert fault.labels() == [{"domain": domain, "target": target, "intensity": intensity}]
        assert domain in enum


def test_mixed_scenarios_label_both_faults_and_never_clash() -> None:
    topo = Topology()
    assert MIXED
    for name, parts in MIXED.items():
        combined = build(name, topo, {part: OFFLINE[part] for part in parts if part in OFFLINE})
        assert isinstance(combined, Combined)
        assert combined.labels() == [{"domain": DOMAINS[p][0], "target": DOMAINS[p][1],
                                      "intensity": json.dumps(SCENARIOS[p].defaults, sort_keys=True)} for p in parts]
        assert len({DOMAINS[p][0] for p in parts}) == 2


def test_faults_holding_the_same_thing_cannot_be_combined() -> None:
    topo = Topology()
    loss, stall = (build(n, topo, OFFLINE[n]) for n in ("tcp_loss", "connect_stall"))
    assert isinstance(loss, Fault) and isinstance(stall, Fault)
    with pytest.raises(ValueError, match="'connect_stall' and 'tcp_loss' both set nft"):
        Combined([loss, stall])


def test_bad_names_and_parameters_are_config_errors() -> None:
    topo = Topology()
    with pytest.raises(ConfigError, match="unknown scenario 'dns_slow'"):
        build("dns_slow", topo)
    with pytest.raises(ConfigError, match=r"'tcp_loss' has no parameter 'every_n'\nits parameters: drop, every$"):
        build("tcp_loss", topo, {"every_n": 3})
    with pytest.raises(ConfigError, match="has no part 'memory_pressure'"):
        build("dns_latency+cpu_contention", topo, {"memory_pressure": {}})
    with pytest.raises(ConfigError, match="tcp_loss.every=0 is out of range: 1 to 1000"):
        build("tcp_loss", topo, {"port": 1, "every": 0})


# -- in a lab ---------------------------------------------------------------------------

# accepts connections until killed and reads each to EOF, answering the byte count
SINK = r"""
import socket, sys, threading
ls = socket.socket(); ls.bind((sys.argv[1], 0)); ls.listen(64)
print("ready %s:%d" % ls.getsockname(), flush=True)
def serve(c):
    n = 0
    while chunk := c.recv(65536):
        n += len(chunk)
    c.sendall(str(n).encode()); c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# connects to argv[1]:argv[2] and sends argv[3] bytes in 1000-byte writes; prints
# the connect time, the byte count the server read and this connection's
# retransmits (tcp_info.tcpi_total_retrans, at byte 100)
CLIENT = r"""
import socket, struct, sys, time
t0 = time.monotonic()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
print(time.monotonic() - t0)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(int(sys.argv[3]) // 1000):
    s.sendall(b"x" * 1000)
s.shutdown(socket.SHUT_WR)
print(s.recv(64).decode())
print(struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 100)[0])
"""

# POST /admin/fault answered 200 and printed as "posted <json>"; with argv[2] and
# argv[3] (cert, key) over TLS; prints `ready` and, as the dns server does, `admin`
ADMIN = r"""
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        print("posted", body.decode(), flush=True)
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a): pass
s = http.server.HTTPServer((sys.argv[1], 0), H)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready %s:%d" % s.server_address, flush=True)
print("admin %s:%d" % s.server_address, flush=True)
s.serve_forever()
"""

IDLE = [sys.executable, "-c", "print('ready 0.0.0.0:1', flush=True); import time; time.sleep(600)"]


@pytest.fixture
def lab():
    with Topology(INDEX) as topo:
        yield topo


def _in_ns(topo: Topology, service: str, argv: list[str]) -> list[str]:
    done = subprocess.run(["ip", "netns", "exec", topo.ns(service), *argv], capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{argv} in {topo.ns(service)} failed: {done.stderr}"
    return done.stdout.split()


def _retrans_segs(topo: Topology, service: str) -> int:
    # -a absolute, -z zeros too, -s leave nstat's history file alone
    words = _in_ns(topo, service, ["nstat", "-asz", "TcpRetransSegs"])  # "#kernel" line first
    return int(words[words.index("TcpRetransSegs") + 1])


def _send(topo: Topology, nbytes: int) -> tuple[float, int, int]:
    """From the gateway to the backend's sink: (connect seconds, bytes the sink read, retransmits)."""
    connect_s, received, retrans = _in_ns(topo, "gateway", [
        sys.executable, "-c", CLIENT, topo.addr("backend"), str(topo.endpoint("backend")[1]), str(nbytes)])
    return float(connect_s), int(received), int(retrans)


def _ruleset(topo: Topology, service: str) -> str:
    return " ".join(_in_ns(topo, service, ["nft", "list", "ruleset"]))


@pytest.fixture
def cert(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=backend.lab", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=TIMEOUT_S)
    return str(cert), str(key)


def _posted(topo: Topology, service: str) -> list[dict]:
    return [json.loads(line.removeprefix("posted "))
            for line in topo.log(service).read_text().splitlines() if line.startswith("posted ")]


class TestInALab:
    pytestmark = kernel

    def test_tcp_loss_makes_the_gateway_retransmit_to_the_backend(self, lab: Topology) -> None:
        lab.start("backend", [sys.executable, "-c", SINK, lab.addr("backend")])
        fault = build("tcp_loss", lab, {"every": 4})
        with fault:
            assert f"tcp dport {lab.endpoint('backend')[1]}" in _ruleset(lab, "backend")
            before = _retrans_segs(lab, "gateway")
            # ~200 MTU-sized segments (no TSO on the veths), a quarter dropped at the backend
            _, received, retrans = _send(lab, 200_000)
            grown = _retrans_segs(lab, "gateway") - before
        assert received == 200_000
        assert grown >= 10, f"the gateway's TcpRetransSegs grew by only {grown}"
        assert retrans >= 10
        assert "slo_lab" not in _ruleset(lab, "backend")
        # after clear a connection loses nothing; on a busy host a tail loss probe
        # may still count as a retransmit
        after = _send(lab, 200_000)[2]
        assert after * 4 < retrans, f"{after} retransmits after clear, {retrans} under the fault"
        fault.clear()

    def test_connect_stall_makes_a_connect_wait_for_the_syn_retransmit(self, lab: Topology) -> None:
        lab.start("backend", [sys.executable, "-c", SINK, lab.addr("backend")])
        # every=2 from a fresh count: the first SYN is dropped, its retransmit passes
        with build("connect_stall", lab, {"every": 2, "drop": 1}):
            connect_s, _, _ = _send(lab, 1000)
        assert 0.9 <= connect_s < 2.5, f"connect took {connect_s:.3f} s, expected ~1 s (one SYN retransmit)"
        connect_s, _, _ = _send(lab, 1000)
        assert connect_s < 0.5

    def test_cpu_contention_runs_hogs_in_the_gateway_cgroups_under_a_quota(self, lab: Topology) -> None:
        lab.start("gateway", IDLE)
        cpu, cpuacct = lab.cgroup_v1("cpu", "gateway"), lab.cgroup_v1("cpuacct", "gateway")

        def usage_s() -> float:
            return int((cpuacct / "cpuacct.usage").read_text()) / 1e9

        def throttled() -> int:
            return int((cpu / "cpu.stat").read_text().split("nr_throttled")[1].split()[0])

        # a quota small enough to bite even when the host is busy (this VM shares
        # 2 vCPUs with whatever else runs): 2 ms of CPU per 20 ms period
        fault = build("cpu_contention", lab, {"hogs": 2, "cpus": 0.1, "period_us": 20_000})
        assert isinstance(fault, Fault)
        fault.inject()
        try:
            fault.inject()  # idempotent: still two hogs
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "2000"
            hogs = [p.pid for p in fault._procs]  # type: ignore[attr-defined]
            assert len(hogs) == 2
            assert set(hogs) <= {int(p) for p in (lab.cgroup_v2("gateway") / "cgroup.procs").read_text().split()}
            u0, t0 = usage_s(), throttled()
            time.sleep(1.0)
            used = usage_s() - u0
            # two busy loops capped at a tenth of a CPU: ~0.1 s of CPU in 1 s, throttled
            assert 0.02 <= used <= 0.2, f"the gateway's cgroup used {used:.3f} s of CPU in 1 s"
            assert throttled() > t0
        finally:
            fault.clear()
        fault.clear()
        assert all(not Path(f"/proc/{pid}").exists() for pid in hogs)
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "-1"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        u0 = usage_s()
        time.sleep(0.5)
        assert usage_s() - u0 < 0.05, "CPU is still used in the gateway's cgroup after clear()"

    def test_memory_pressure_squeezes_the_service_below_its_working_set(self, lab: Topology) -> None:
        # a stand-in with 48 MiB of file pages it keeps reading, as the backend reads its weights
        weights = lab.workdir / "stand-in-weights.bin"
        reader = (f"import mmap, os, time; p = {str(weights)!r}; f = open(p, 'wb'); f.write(b'x' * (48 << 20)); "
                  "f.close(); m = mmap.mmap(os.open(p, os.O_RDONLY), 48 << 20, prot=mmap.PROT_READ); "
                  "m.madvise(mmap.MADV_RANDOM); os.unlink(p); print('ready 0.0.0.0:1', flush=True)\n"
                  "while True:\n    sum(m[i] for i in range(0, 48 << 20, 4096)); time.sleep(0.01)")
        service = lab.start("backend", [sys.executable, "-c", reader])
        mem = lab.cgroup_v1("memory", "backend")
        unlimited = (mem / "memory.limit_in_bytes").read_text()
        deadline = time.monotonic() + 10
        while int((mem / "memory.usage_in_bytes").read_text()) < 48 << 20:
            assert time.monotonic() < deadline, "the stand-in never held its 48 MiB"
            time.sleep(0.05)
        usage = int((mem / "memory.usage_in_bytes").read_text())
        fault = build("memory_pressure", lab, {"squeeze_mb": 16})
        assert isinstance(fault, Fault)
        with fault:
            limit = int((mem / "memory.limit_in_bytes").read_text())
            assert limit == fault.limit_bytes  # type: ignore[attr-defined]
            assert usage - (17 << 20) < limit <= usage - (16 << 20)
            # the working set no longer fits: the kernel reclaims its pages, again and again
            failcnt = int((mem / "memory.failcnt").read_text())
            time.sleep(1)
            assert int((mem / "memory.failcnt").read_text()) > failcnt
            assert int((mem / "memory.usage_in_bytes").read_text()) <= limit
            assert service.poll() is None, "the stand-in was OOM-killed"
        assert (mem / "memory.limit_in_bytes").read_text() == unlimited
        assert (mem / "cgroup.procs").read_text().split() == [str(service.pid)]

    def test_memory_pressure_refuses_a_squeeze_larger_than_the_service(self, lab: Topology) -> None:
        lab.start("backend", IDLE)
        with pytest.raises(CaptureError, match="give a smaller lab.faults.memory_pressure.squeeze_mb"):
            build("memory_pressure", lab, {"squeeze_mb": 4000}).inject()

    @pytest.mark.parametrize(("scenario", "service", "params", "body"), [
        ("dns_latency", "dns", {"ms": 250}, {"kind": "delay", "ms": 250}),
        ("tls_slowdown", "backend", {"ms": 300}, {"kind": "tls_delay", "ms": 300}),
        ("provider_throttle", "backend", {"fraction": 0.25},
         {"kind": "throttle", "retry_after_s": 1, "fraction": 0.25}),
        ("retrieval_slowdown", "retrieval", {"extra_ms": 400}, {"kind": "slowdown", "extra_ms": 400}),
        ("provider_error", "backend", {"fraction": 0.3}, {"kind": "error", "fraction": 0.3}),
    ])
    def test_admin_faults_post_their_json(self, lab: Topology, cert: tuple[str, str], scenario: str,
                                          service: str, params: dict, body: dict) -> None:
        tls = list(cert) if service == "backend" else []  # the backend serves HTTPS only
        lab.start(service, [sys.executable, "-c", ADMIN, lab.addr(service), *tls])
        fault = build(scenario, lab, params)
        fault.clear()  # nothing injected yet: nothing to clear, nothing sent
        assert _posted(lab, service) == []
        fault.inject()
        assert _posted(lab, service) == [body]
        fault.clear()
        fault.clear()
        assert _posted(lab, service) == [body, {"kind": "none"}]

    def test_clearing_an_admin_fault_of_a_stopped_server_is_safe(self, lab: Topology) -> None:
        url = f"http://{lab.addr('retrieval')}:9/admin/fault"  # nothing listens there
        fault = build("retrieval_slowdown", lab, {"admin_url": url})
        with pytest.raises(CaptureError, match=f"POST {url} .* failed: .*[Rr]efused"):
            fault.inject()
        fault.clear()
