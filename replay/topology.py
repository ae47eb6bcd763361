"""The incident lab's layout: one network namespace and one pod-like cgroup per service.

A `Topology` lays out, for lab number k (0 unless two labs run at once):

* a bridge `slo-br<k>` in the root namespace with 198.18.(100+k).1/24, where the
  recorder's OTLP receiver and the load generator live;
* a namespace `slo-lab-<k>-<service>` per service, joined to the bridge by a veth
  (`eth0` inside, 198.18.(100+k).11 dns, .12 retrieval, .13 backend, .14 gateway),
  offloads off so that receiver-side drops make real, MTU-sized retransmits;
* `/etc/netns/<ns>/resolv.conf` naming the dns service and an `/etc/netns/<ns>/hosts`
  with only localhost, so every lab name is a real DNS query;
* per service a cgroup-v2 directory named as the kubelet's systemd driver names a
  container's, below the lab's own root (`.../unified/slo-lab-<k>/kubepods.slice/...`),
  and cgroup-v1 directories `slo-lab-<k>/<service>` under cpu, cpuacct and memory,
  where the faults set quotas and limits;
* a pods file in the shape of the kubelet's /pods, so recorded rows name the pods.

`ip netns exec` mounts a fresh sysfs, in which /sys/fs/cgroup is empty: a process
joins its cgroups *before* it enters the namespace (see `spawn`). Everything here
needs root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay.netns import Scoped, cleanup_leftovers, exec_argv, run, wait_link_up
from runfmt.errors import CaptureError

__all__ = ["K8S_NAMESPACE", "PREFIX", "Pod", "SERVICES", "Topology", "cleanup", "pod_of"]

SERVICES = ("dns", "retrieval", "backend", "gateway")
K8S_NAMESPACE = "llm-lab"
PREFIX = "slo-lab-"
CGROUP_V2 = Path("/sys/fs/cgroup/unified")
CGROUP_V1 = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")  # separate hierarchies on this kernel
NETNS_ETC = Path("/etc/netns")
STOP_GRACE_S = 5.0  # services flush their spans on SIGTERM

_UID_NAMESPACE = uuid.UUID("5107ab00-1ab0-4c3a-9d1e-000000000001")
_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# joins the cgroup.procs files before `--`, then execs the rest: every process
# and thread the service makes afterwards is charged there
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
_ENDPOINT = re.compile(r"^(?P<kind>[a-z]+) \[?(?P<host>[^\s\]]*)\]?:(?P<port>\d+)$")
_CLEANUP_HINT = ("a lab with this index is running (pass another index), or a killed run left it "
                 "behind: replay.topology.cleanup() removes it (the runner's cleanup command).")


@dataclass(frozen=True)
class Pod:
    """The kubelet pod a service plays; the same for a service in every run."""

    service: str
    name: str  # <service>-<10 hex>, like a Deployment's pod
    uid: str  # dashed UUID
    container_id: str  # 64 hex


def pod_of(service: str) -> Pod:
    digest = hashlib.sha256(f"slo-lab/{service}".encode()).hexdigest()
    return Pod(service=service, name=f"{service}-{digest[:10]}",
               uid=str(uuid.uuid5(_UID_NAMESPACE, service)),
               container_id=hashlib.sha256(f"slo-lab/{service}/container".encode()).hexdigest())


class Topology(Scoped):
    """The lab's network and cgroups; a context manager.

    Leaving the block (also by Ctrl-C or an exception, and a failed set-up) stops
    every process started here (SIGTERM, then SIGKILL of all in the lab's cgroups)
    and removes what was made: namespaces, veths, bridge, /etc/netns entries,
    cgroup directories and, unless given, the work directory with the logs.
    """

    def __init__(self, index: int = 0, *, workdir: Path | str | None = None,
                 ready_timeout_s: float = 20.0) -> None:
        if not 0 <= index <= 99:
            raise ValueError(f"index must be 0..99, got {index}")
        self.index = index
        self.name = f"{PREFIX}{index}"
        self.bridge = f"slo-br{index}"
        self._subnet = f"198.18.{100 + index}"
        self.host_ip = f"{self._subnet}.1"
        self.ready_timeout_s = ready_timeout_s
        self._given_workdir = Path(workdir) if workdir is not None else None
        # a fresh temporary directory unless given, made on entering the block
        self.workdir = self._given_workdir or Path(tempfile.gettempdir()) / f"{self.name}-unstarted"
        self._made: list[tuple[str, str]] = []  # (kind, what), undone in reverse
        self._procs: list[subprocess.Popen[bytes]] = []
        self._log_offsets: dict[str, int] = {}

    # -- names ------------------------------------------------------------------

    def _check(self, service: str) -> str:
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; the lab has {', '.join(SERVICES)}")
        return service

    def ns(self, service: str) -> str:
        return f"{self.name}-{self._check(service)}"

    def addr(self, service: str) -> str:
        return f"{self._subnet}.{11 + SERVICES.index(self._check(service))}"

    def zone(self) -> dict[str, str]:
        """The names the lab's DNS server answers: <service>.lab → address."""
        return {f"{service}.lab": self.addr(service) for service in SERVICES}

    def pod(self, service: str) -> Pod:
        return pod_of(self._check(service))

    @property
    def cgroup_root(self) -> Path:
        """The cgroup-v2 directory every lab process is under."""
        return CGROUP_V2 / self.name

    def cgroup_v2(self, service: str) -> Path:
        pod = self.pod(service)
        return (CGROUP_V2 / self.name / "kubepods.slice" / "kubepods-burstable.slice"
                / f"kubepods-burstable-pod{pod.uid.replace('-', '_')}.slice"
                / f"cri-containerd-{pod.container_id}.scope")

    def cgroup_v1(self, controller: str, service: str) -> Path:
        if controller not in V1_CONTROLLERS:
            raise ValueError(f"unknown controller {controller!r}; the lab has {', '.join(V1_CONTROLLERS)}")
        return CGROUP_V1 / controller / self.name / self._check(service)

    def procs_files(self, service: str) -> list[Path]:
        return [d / "cgroup.procs" for d in
                (self.cgroup_v2(service), *(self.cgroup_v1(c, service) for c in V1_CONTROLLERS))]

    @property
    def pods_file(self) -> Path:
        return self.workdir / "pods.json"

    def log(self, service: str) -> Path:
        """stdout and stderr of the service's processes."""
        return self.workdir / f"{self._check(service)}.log"

    def pod_env(self, service: str) -> dict[str, str]:
        """What the lab's services read to name their pod in their spans."""
        return {"LAB_POD": self.pod(service).name, "LAB_NAMESPACE": K8S_NAMESPACE}

    # -- set-up and teardown ----------------------------------------------------


    def _create(self) -> None:
        for root in (CGROUP_V2 / self.name, *(CGROUP_V1 / c / self.name for c in V1_CONTROLLERS)):
            if root.exists():
                raise CaptureError(f"cgroup {root} exists already", _CLEANUP_HINT)
        if self._given_workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
            self._made.append(("workdir", str(self.workdir)))
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            for leaf in (self.cgroup_v2(service), *(self.cgroup_v1(c, service) for c in V1_CONTROLLERS)):
                self._mkdirs(leaf)
        run(["ip", "link", "add", self.bridge, "type", "bridge"], hint=_CLEANUP_HINT)
        self._made.append(("link", self.bridge))
        # the alias lets cleanup() find the bridge by the lab's name
        run(["ip", "link", "set", "dev", self.bridge, "alias", self.name])
        run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge])
        _offloads_off(None, self.bridge)
        run(["ip", "link", "set", "dev", self.bridge, "up"])
        for service in SERVICES:
            self._add_host(service)
        for service in SERVICES:
            wait_link_up(self.ns(service), "eth0")
        self._write_pods_file()

    def _mkdirs(self, leaf: Path) -> None:
        missing = [p for p in (leaf, *leaf.parents) if not p.exists()]
        for path in reversed(missing):
            try:
                path.mkdir()
            except OSError as exc:
                raise CaptureError(f"cannot create cgroup {path}: {exc.strerror}", _CLEANUP_HINT) from exc
            self._made.append(("cgroup", str(path)))

    def _add_host(self, service: str) -> None:
        ns, host_if = self.ns(service), f"slo{self.index}-{service}"
        run(["ip", "netns", "add", ns], hint=_CLEANUP_HINT)
        self._made.append(("netns", ns))
        if not NETNS_ETC.exists():
            NETNS_ETC.mkdir()
            self._made.append(("etc_root", str(NETNS_ETC)))
        etc = NETNS_ETC / ns
        etc.mkdir()
        self._made.append(("etc", str(etc)))
        (etc / "resolv.conf").write_text(f"nameserver {self.addr('dns')}\n")
        (etc / "hosts").write_text(_HOSTS)
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
        # deleted by name: a deleted namespace takes its devices with it only later,
        # in a kernel work queue, and the next lab would find the name taken
        self._made.append(("link", host_if))
        run(["ip", "link", "set", "dev", host_if, "alias", ns, "master", self.bridge])
        _offloads_off(None, host_if)
        run(["ip", "link", "set", "dev", host_if, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{self.addr(service)}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _offloads_off(ns, "eth0")
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _write_pods_file(self) -> None:
        items = []
        for service in SERVICES:
            pod = self.pod(service)
            items.append({
                "metadata": {"name": pod.name, "namespace": K8S_NAMESPACE, "uid": pod.uid,
                             "labels": {"app": service}},
                "spec": {"containers": [{"name": service}], "nodeName": socket.gethostname()},
                "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": self.host_ip,
                           "podIP": self.addr(service),
                           "containerStatuses": [{"name": service, "ready": True,
                                                  "containerID": f"containerd://{pod.container_id}"}]},
            })
        doc = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        self.pods_file.write_text(json.dumps(doc, indent=1) + "\n")

    def _teardown(self, *, raise_errors: bool) -> None:
        errors: list[BaseException] = []
        self._stop_processes(errors)
        for kind, what in reversed(self._made):
            try:
                _UNDO[kind](what)
            except (CaptureError, OSError) as exc:
                errors.append(exc)
        self._made.clear()
        if errors and raise_errors:
            raise errors[0]

    def _stop_processes(self, errors: list[BaseException]) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # whatever is left, and anything the services started: all of the lab's cgroups
        for kind, what in self._made:
            if kind == "cgroup" and Path(what).parent in (CGROUP_V2, *(CGROUP_V1 / c for c in V1_CONTROLLERS)):
                try:
                    _kill_cgroup_tree(Path(what))
                except CaptureError as exc:
                    errors.append(exc)
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired as exc:
                errors.append(exc)
        self._procs.clear()

    # -- processes --------------------------------------------------------------

    def spawn(self, service: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              **popen_kw: Any) -> subprocess.Popen[bytes]:
        """Start `argv` in the service's namespace and cgroups; stopped at teardown.

        Returns once the process is in the cgroups (the namespace it enters next).

        The process inherits this process's environment, plus `pod_env(service)`
        and `env`. It starts a session of its own, so a Ctrl-C at the terminal
        reaches only the runner, which then stops the lab in order.
        """
        wrapped = ["sh", "-c", _JOIN, "slo-lab-join", *map(str, self.procs_files(service)), "--",
                   *exec_argv(self.ns(service), argv)]
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        full_env = {**os.environ, **self.pod_env(service), **(env or {})}
        proc: subprocess.Popen[bytes] = subprocess.Popen(wrapped, env=full_env, start_new_session=True,
                                                         **popen_kw)
        self._procs.append(proc)
        # the files are joined in order: once in the last one, it is in all
        last = self.procs_files(service)[-1]
        deadline = time.monotonic() + 5.0
        while str(proc.pid) not in last.read_text().split():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise CaptureError(f"'{' '.join(argv)}' did not join the cgroups of '{service}' "
                                   f"(pid {proc.pid}, exit code {proc.returncode})",
                                   f"the error, if any, is in its stderr; check {last.parent}")
            time.sleep(0.001)
        return proc

    def start(self, service: str, argv: Sequence[str],
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a lab service; return once it printed `ready HOST:PORT`.

        Its stdout and stderr go to `log(service)`. Raises CaptureError quoting
        the log when it exits or stays silent for `ready_timeout_s`.
        """
        log_path = self.log(service)
        with open(log_path, "ab") as log:
            self._log_offsets[service] = log.tell()
            proc = self.spawn(service, argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while self._find(service, "ready") is None:
            if proc.poll() is not None:
                raise CaptureError(
                    f"service '{service}' exited with code {proc.returncode} before it printed "
                    f"'ready HOST:PORT'; its output:\n{self._tail(service)}",
                    f"command: {' '.join(argv)}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=5)
                raise CaptureError(
                    f"service '{service}' did not print 'ready HOST:PORT' within "
                    f"{self.ready_timeout_s:.0f} s; its output:\n{self._tail(service)}",
                    f"command: {' '.join(argv)}")
            time.sleep(0.02)
        return proc

    def endpoint(self, service: str, kind: str = "ready", timeout_s: float = 2.0) -> tuple[str, int]:
        """(host, port) from the line `<kind> HOST:PORT` the running service printed.

        An unspecified address (0.0.0.0, ::) is replaced by the service's own.
        """
        if service not in self._log_offsets:
            raise CaptureError(f"service '{service}' was not started in this lab",
                               "start it with Topology.start() first")
        deadline = time.monotonic() + timeout_s
        while (found := self._find(service, kind)) is None:
            if time.monotonic() > deadline:
                raise CaptureError(f"service '{service}' printed no '{kind} HOST:PORT' line",
                                   f"its output is in {self.log(service)}")
            time.sleep(0.02)
        host, port = found
        return (self.addr(service) if host in ("", "0.0.0.0", "::") else host), port

    def _find(self, service: str, kind: str) -> tuple[str, int] | None:
        with open(self.log(service), "rb") as f:
            f.seek(self._log_offsets[service])
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:
            m = _ENDPOINT.match(line.strip())
            if m and m["kind"] == kind:
                return m["host"], int(m["port"])
        return None

    def _tail(self, service: str, n: int = 20) -> str:
        with open(self.log(service), "rb") as f:
            f.seek(self._log_offsets[service])
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:]) or "(no output)"


def _offloads_off(ns: str | None, dev: str) -> None:
    argv = ["ethtool", "-K", dev, "gso", "off", "tso", "off", "gro", "off"]
    run(exec_argv(ns, argv) if ns else argv)


# -- removal, shared by teardown and cleanup ----------------------------------------


def _cgroup_dirs(root: Path) -> list[Path]:
    """`root` and every directory below it, leaves first."""
    found = [Path(d) for d, _subdirs, _files in os.walk(root)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_cgroup_tree(root: Path, timeout_s: float = 5.0) -> None:
    """SIGKILL every process in `root`'s subtree; return once it is empty."""
    if not root.exists():
        return
    kill = root / "cgroup.kill"  # v2 only: kills the subtree without a pid race
    if kill.exists():
        kill.write_text("1")
    deadline = time.monotonic() + timeout_s
    while True:
        pids: set[int] = set()
        for d in _cgroup_dirs(root):
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        if not pids:
            return
        if time.monotonic() > deadline:
            raise CaptureError(f"processes {sorted(pids)} in cgroup {root} survive SIGKILL",
                               "look at them with ps -o pid,stat,cmd -p <pid>")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _remove_cgroup_tree(root: Path, timeout_s: float = 5.0) -> None:
    """Kill what runs in `root`, then rmdir its directories, leaves first."""
    _kill_cgroup_tree(root, timeout_s)
    for d in _cgroup_dirs(root) if root.exists() else []:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # EBUSY for a moment after the last task exited
                if time.monotonic() > deadline:
                    raise CaptureError(f"cannot remove cgroup {d}: {exc.strerror}",
                                       f"cat {d}/cgroup.procs shows what still runs there") from exc
                time.sleep(0.02)


def _rmdir_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _delete_netns(ns: str) -> None:
    run(["ip", "netns", "delete", ns])


def _delete_link(dev: str) -> None:
    run(["ip", "link", "delete", "dev", dev])


_UNDO = {
    "workdir": lambda path: shutil.rmtree(path, ignore_errors=True),
    "cgroup": lambda path: _remove_cgroup_tree(Path(path)),
    "link": _delete_link,
    "netns": _delete_netns,
    "etc": lambda path: shutil.rmtree(path),
    "etc_root": lambda path: _rmdir_if_empty(Path(path)),  # another lab may use it by now
}


def cleanup(prefix: str = PREFIX) -> list[str]:
    """Remove what labs named `<prefix>...` left behind; return what was removed.

    For the leftovers of a killed run. It does not know which labs are still
    running: the default prefix removes every lab on this host.
    """
    if not prefix:
        raise ValueError("prefix must not be empty: it would match every namespace and cgroup")
    removed: list[str] = []
    # processes first: a namespace a process still holds outlives `ip netns delete`
    for root in (CGROUP_V2, *(CGROUP_V1 / c for c in V1_CONTROLLERS)):
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if d.is_dir() and d.name.startswith(prefix):
                _remove_cgroup_tree(d)
                removed.append(f"cgroup {d}")
    # the lab's bridges and veths carry the lab's or namespace's name as alias
    for link in json.loads(run(["ip", "-j", "link", "show"]) or "[]"):
        if link.get("ifalias", "").startswith(prefix):
            _delete_link(link["ifname"])
            removed.append(f"link {link['ifname']}")
    removed += [f"netns {ns}" for ns in cleanup_leftovers(prefix)]
    for etc in sorted(NETNS_ETC.glob(f"{prefix}*")) if NETNS_ETC.is_dir() else []:
        shutil.rmtree(etc)
        removed.append(f"netns config {etc}")
    for workdir in sorted(Path(tempfile.gettempdir()).glob(f"{prefix}*")):
        if workdir.is_dir() and (workdir / "pods.json").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(f"workdir {workdir}")
    return removed
