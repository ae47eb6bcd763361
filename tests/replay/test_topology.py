"""Kernel tests of the lab's layout: a real bridge, namespaces, resolvers and cgroups.

Each lab uses an index from this test run's pid, so another lab on this host (a
colleague's run) is left alone; every child process is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from capture.pods import PodResolver
from replay.topology import (
    CGROUP_V1,
    CGROUP_V2,
    K8S_NAMESPACE,
    NETNS_ETC,
    SERVICES,
    Topology,
    cleanup,
)
from runfmt.errors import CaptureError

_MISSING = [tool for tool in ("ip", "nft", "ethtool") if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, a bridge and cgroups"),
    pytest.mark.skipif(bool(_MISSING), reason=f"missing tools: {', '.join(_MISSING)}"),
]

INDEX = 50 + os.getpid() % 50
TIMEOUT_S = 20.0

# answers GET with "hello from <argv[2]>"; a thread of its own serves, so the
# service has more than one thread to check
HTTP = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {sys.argv[2]}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer((sys.argv[1], 0), H)
import threading; threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready %s:%d" % s.server_address, flush=True)
threading.Event().wait()
"""

# a DNS server of A records NAME=IP on port 53; AAAA gets an empty answer, other
# names NXDOMAIN; prints "query NAME QTYPE" per question
DNS = r"""
import socket, struct, sys
records = dict(a.split("=") for a in sys.argv[2:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready %s:%d" % s.getsockname(), flush=True)
while True:
    q, peer = s.recvfrom(512)
    labels, i = [], 12
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    name = ".".join(labels).lower()
    ip = records.get(name)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(ip) if ip and qtype == 1 else b""
    flags = 0x8180 | (0 if ip else 3)
    s.sendto(struct.pack("!HHHHHH", q[0] << 8 | q[1], flags, 1, 1 if answer else 0, 0, 0)
             + q[12:i + 5] + answer, peer)
    print("query", name, qtype, flush=True)
"""

# from a service namespace: GET http://NAME:PORT/ by name, through the namespace's resolver
GET_BY_NAME = r"""
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
c.request("GET", "/")
print(c.getresponse().read().decode())
"""


@pytest.fixture
def lab():
    with Topology(INDEX) as topo:
        yield topo


def _start_http(topo: Topology, service: str) -> subprocess.Popen[bytes]:
    return topo.start(service, [sys.executable, "-c", HTTP, topo.addr(service), service])


def _in_ns(topo: Topology, service: str, argv: list[str]) -> str:
    done = subprocess.run(["ip", "netns", "exec", topo.ns(service), *argv], capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{argv} in {topo.ns(service)} failed: {done.stderr}"
    return done.stdout


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.read().decode()


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _link_exists(dev: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", dev], capture_output=True,
                          timeout=10).returncode == 0


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (init) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _traces(topo: Topology) -> list[str]:
    """What of this lab exists on the host; empty when it is gone."""
    found = [f"netns {ns}" for ns in _namespaces() if ns.startswith(f"{topo.name}-")]
    found += [f"link {topo.bridge}"] if _link_exists(topo.bridge) else []
    found += [str(p) for p in NETNS_ETC.glob(f"{topo.name}-*")] if NETNS_ETC.exists() else []
    found += [str(p) for p in (CGROUP_V2 / topo.name, *(CGROUP_V1 / c / topo.name
                                                       for c in ("cpu", "cpuacct", "memory"))) if p.exists()]
    return found


def test_services_are_reachable_from_the_root_namespace_and_by_name(lab: Topology) -> None:
    dns_records = [f"{name}={addr}" for name, addr in lab.zone().items()]
    lab.start("dns", [sys.executable, "-c", DNS, lab.addr("dns"), *dns_records])
    for service in ("retrieval", "backend"):
        _start_http(lab, service)
        # from the root namespace, where the load generator runs, over the bridge
        host, port = lab.endpoint(service)
        assert host == lab.addr(service)
        assert _get(f"http://{host}:{port}/") == f"hello from {service}"
    # from one service to another by name: /etc/hosts knows only localhost, so
    # the name goes to the lab's DNS server through /etc/netns/<ns>/resolv.conf
    assert _in_ns(lab, "gateway", ["cat", "/etc/resolv.conf"]) == f"nameserver {lab.addr('dns')}\n"
    hosts = _in_ns(lab, "gateway", ["cat", "/etc/hosts"])
    assert [line.split()[1] for line in hosts.splitlines()] == ["localhost", "localhost"]
    for service in ("retrieval", "backend"):
        out = _in_ns(lab, "gateway", [sys.executable, "-c", GET_BY_NAME, f"{service}.lab",
                                      str(lab.endpoint(service)[1])])
        assert out.strip() == f"hello from {service}"
    assert "query backend.lab 1" in lab.log("dns").read_text()
    # nothing answers outside the lab: no default route in a service namespace
    assert "default" not in _in_ns(lab, "gateway", ["ip", "route"])


def test_offloads_are_off_on_both_ends_of_every_veth(lab: Topology) -> None:
    features = _in_ns(lab, "backend", ["ethtool", "-k", "eth0"])
    host_side = subprocess.run(["ethtool", "-k", f"slo{lab.index}-backend"], capture_output=True,
                               text=True, timeout=10, check=True).stdout
    for text in (features, host_side):
        for feature in ("tcp-segmentation-offload", "generic-segmentation-offload",
                        "generic-receive-offload"):
            assert f"{feature}: off" in text


def test_a_service_and_all_its_threads_run_in_its_pod_cgroups(lab: Topology) -> None:
    proc = _start_http(lab, "gateway")
    v2 = lab.cgroup_v2("gateway")
    assert v2.name.startswith("cri-containerd-") and v2.name.endswith(".scope")
    assert v2.parent.name.startswith("kubepods-burstable-pod")
    tasks = list(Path(f"/proc/{proc.pid}/task").iterdir())
    assert len(tasks) >= 2, "the stand-in should run a second thread"
    for task in tasks:
        lines = dict(line.split(":", 2)[1:] for line in (task / "cgroup").read_text().splitlines())
        assert lines[""] == "/" + str(v2.relative_to(CGROUP_V2))
        for controller in ("cpu", "cpuacct", "memory"):
            assert lines[controller] == f"/{lab.name}/gateway"
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    assert f"LAB_POD={lab.pod('gateway').name}".encode() in environ
    assert f"LAB_NAMESPACE={K8S_NAMESPACE}".encode() in environ
    # the recorder's resolver names the pod from the cgroup id (the v2 dir's inode)
    identity = PodResolver(cgroup_root=CGROUP_V2, pods_file=lab.pods_file).resolve(v2.stat().st_ino)
    assert identity is not None
    assert (identity.pod, identity.namespace, identity.container) == (
        lab.pod("gateway").name, K8S_NAMESPACE, "gateway")
    assert identity.qos_class == "burstable"


def test_pods_file_names_every_service_the_same_way_each_run(lab: Topology) -> None:
    doc = json.loads(lab.pods_file.read_text())
    assert doc["kind"] == "PodList"
    assert [item["metadata"]["name"] for item in doc["items"]] == [lab.pod(s).name for s in SERVICES]
    with Topology(INDEX + 1 if INDEX < 99 else INDEX - 1) as other:
        assert [other.pod(s) for s in SERVICES] == [lab.pod(s) for s in SERVICES]
        assert other.addr("gateway") != lab.addr("gateway")


def test_start_quotes_the_output_of_a_service_that_dies(lab: Topology) -> None:
    argv = [sys.executable, "-c", "import sys; print('no such model', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(CaptureError, match=r"(?s)'retrieval' exited with code 3 .*no such model"):
        lab.start("retrieval", argv)


def test_start_gives_up_on_a_silent_service() -> None:
    with Topology(INDEX, ready_timeout_s=0.5) as topo:
        t0 = time.monotonic()
        with pytest.raises(CaptureError, match="did not print 'ready HOST:PORT' within"):
            topo.start("backend", ["sleep", "30"])
        assert time.monotonic() - t0 < 5


def test_exit_stops_every_process_and_removes_the_lab() -> None:
    with Topology(INDEX) as topo:
        workdir = topo.workdir
        # a service that forks a child of its own, which must not survive the lab
        proc = topo.start("backend", ["sh", "-c", "sleep 60 & echo ready 0.0.0.0:1; wait"])
        child = int(next(p for p in (topo.cgroup_v2("backend") / "cgroup.procs").read_text().split()
                         if int(p) != proc.pid))
        assert _traces(topo)
    assert proc.returncode is not None
    assert not _alive(child), "a child of the service outlived the lab"
    assert _traces(topo) == []
    assert not workdir.exists()


def test_ctrl_c_in_the_block_removes_the_lab() -> None:
    with pytest.raises(KeyboardInterrupt):
        with Topology(INDEX) as topo:
            _start_http(topo, "dns")
            raise KeyboardInterrupt
    assert _traces(topo) == []


def test_failed_set_up_removes_what_it_made_and_only_that() -> None:
    topo = Topology(INDEX)
    # occupy the namespace of the third service: set-up fails half-way
    taken = topo.ns("backend")
    subprocess.run(["ip", "netns", "add", taken], check=True, timeout=10)
    try:
        with pytest.raises(CaptureError, match=f"'ip netns add {taken}' failed"):
            with topo:
                pass
        assert [t for t in _traces(topo) if t != f"netns {taken}"] == []
        assert taken in _namespaces(), "must not delete a namespace it did not make"
    finally:
        subprocess.run(["ip", "netns", "delete", taken], check=True, timeout=10)


def test_a_second_lab_with_the_same_index_is_refused(lab: Topology) -> None:
    with pytest.raises(CaptureError, match=f"cgroup .*{lab.name} exists already"):
        with Topology(INDEX):
            pass
    # the refused one touched nothing of the running one
    _start_http(lab, "gateway")
    assert _get("http://{}:{}/".format(*lab.endpoint("gateway"))) == "hello from gateway"


# opens a lab, starts a service, says so, then waits to be killed
KILLED_RUNNER = r"""
import sys, time
from replay.topology import Topology
topo = Topology(int(sys.argv[1])).__enter__()
proc = topo.start("gateway", ["sh", "-c", "echo ready 0.0.0.0:1; exec sleep 60"])
print(proc.pid, flush=True)
time.sleep(60)
"""


def test_cleanup_removes_what_a_killed_run_left() -> None:
    runner = subprocess.Popen([sys.executable, "-c", KILLED_RUNNER, str(INDEX)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert runner.stdout is not None
        service_pid = int(runner.stdout.readline() or 0)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        runner.stdout.close()
    assert service_pid, "the runner did not start its lab"
    topo = Topology(INDEX)
    # namespaces and their /etc/netns entries, the bridge, the v2 and three v1 cgroup roots
    assert len(_traces(topo)) == 2 * len(SERVICES) + 1 + 4, _traces(topo)
    removed = cleanup(topo.name)
    assert f"link {topo.bridge}" in removed
    assert {f"netns {topo.ns(s)}" for s in SERVICES} <= set(removed)
    assert f"cgroup {CGROUP_V2 / topo.name}" in removed
    assert _traces(topo) == []
    assert not _alive(service_pid), "the service of the killed run survived cleanup"
    assert cleanup(topo.name) == []


def test_cleanup_removes_a_leaked_namespace_and_cgroup() -> None:
    prefix = f"slo-lab-leak{os.getpid()}"
    ns, v2, cpu = f"{prefix}-x", CGROUP_V2 / prefix / "a", CGROUP_V1 / "cpu" / prefix
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    v2.mkdir(parents=True)
    cpu.mkdir()
    sleeper = subprocess.Popen(["sh", "-c", f"echo $$ > {v2}/cgroup.procs; exec sleep 60"])
    try:
        time.sleep(0.1)
        assert cleanup(prefix) == [f"cgroup {CGROUP_V2 / prefix}", f"cgroup {cpu}", f"netns {ns}"]
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert not (CGROUP_V2 / prefix).exists() and not cpu.exists() and ns not in _namespaces()
    finally:
        sleeper.kill()
        sleeper.wait(timeout=5)
        for path in (v2, v2.parent, cpu):
            if path.exists():
                path.rmdir()
        if ns in _namespaces():
            subprocess.run(["ip", "netns", "delete", ns], timeout=10)
    with pytest.raises(ValueError):
        cleanup("")
