"""Fault injectors: one per scenario, each really injected into a running lab.

Every injector has `inject()`, `clear()` (idempotent, safe before inject and after
the lab is gone) and `labels()`, the ground truth written to labels.parquet: a v1
fault domain (docs/contracts/v1/incident-attribution.schema.json) and the target,
the lab service the fault is injected into.

    fault = build("tcp_loss", topology, {"every": 10})
    with fault:          # inject() ... clear()
        run_load()

Delays live in the lab's servers (POST /admin/fault); this kernel has no netem.
Packet drops are nft rules at the receiver, CPU and memory faults are v1 cgroup
settings plus helper processes inside the target's cgroups.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from replay.netns import clear_drops, drop_ingress_every
from replay.topology import SERVICES, Topology
from runfmt.errors import CaptureError, ConfigError

__all__ = ["AdminFault", "Combined", "CpuContention", "Fault", "Injector", "MIXED",
           "MemoryPressure", "PacketDrops", "Param", "SCENARIOS", "Scenario", "build", "check_fault_params", "params_for"]

ADMIN_TIMEOUT_S = 5.0
# no server at the address any more: refused, or the lab's network is gone
_GONE = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)
_MIB = 1 << 20


class Injector(ABC):
    """Something `build` returns: one fault, or several at once."""

    @abstractmethod
    def inject(self) -> None: ...

    @abstractmethod
    def clear(self) -> None: ...

    @abstractmethod
    def labels(self) -> list[dict[str, str]]: ...

    def __enter__(self) -> Injector:
        self.inject()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.clear()


class Fault(Injector):
    """One fault: what it breaks (`domain`), where (`target`), and what it holds.

    `resource` names what the fault sets exclusively (an admin endpoint, an nft
    table, a cgroup file): two faults holding the same one cannot run together.
    """

    def __init__(self, scenario: str, domain: str, target: str, resource: str) -> None:
        self.scenario, self.domain, self.target, self.resource = scenario, domain, target, resource
        self.params: dict[str, Any] = {}  # the scenario's parameters it was built with

    def label(self) -> dict[str, str]:
        return {"domain": self.domain, "target": self.target,
                "intensity": json.dumps(self.params, sort_keys=True) if self.params else None}

    def labels(self) -> list[dict[str, str]]:
        return [self.label()]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.scenario} on {self.resource}>"


class Combined(Injector):
    """Several faults at once; each keeps its own label."""

    def __init__(self, faults: list[Fault]) -> None:
        held: dict[str, str] = {}
        for fault in faults:
            if fault.resource in held:
                raise ValueError(f"'{fault.scenario}' and '{held[fault.resource]}' both set "
                                 f"{fault.resource}: they cannot run together")
            held[fault.resource] = fault.scenario
        self.faults = faults

    def inject(self) -> None:
        try:
            for fault in self.faults:
                fault.inject()
        except BaseException:
            self.clear()
            raise

    def clear(self) -> None:
        errors: list[Exception] = []
        for fault in reversed(self.faults):
            try:
                fault.clear()
            except Exception as exc:  # clear the others anyway, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    def labels(self) -> list[dict[str, str]]:
        return [fault.label() for fault in self.faults]


# -- faults in the lab's servers ------------------------------------------------------


class AdminFault(Fault):
    """A fault a lab server holds: POST `body` to its /admin/fault, `{"kind": "none"}` clears."""

    def __init__(self, scenario: str, domain: str, target: str, url: str, body: dict[str, Any]) -> None:
        super().__init__(scenario, domain, target, resource=f"admin {url}")
        self.url, self.body = url, body
        # a held TLS handshake (tls_delay) delays the admin calls too, clear() included
        self.timeout_s = ADMIN_TIMEOUT_S + float(body.get("ms", 0)) / 1000
        self._active = False

    def inject(self) -> None:
        self._active = True  # even if the answer is lost, the server may hold it
        _post(self.url, self.body, self.timeout_s)

    def clear(self) -> None:
        if self._active:
            _post(self.url, {"kind": "none"}, self.timeout_s, gone_ok=True)
            self._active = False


def _post(url: str, body: dict[str, Any], timeout_s: float, *, gone_ok: bool = False) -> None:
    """POST JSON to a lab server; with `gone_ok`, a server that is not there is no error."""
    # lab addresses only: no proxy, and the lab's self-signed certificate
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    hint = "check that the service runs and listens there (its log is in the lab's workdir)"
    try:
        with opener.open(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read(300).decode(errors="replace")
        raise CaptureError(f"POST {url} {json.dumps(body)} was answered {exc.code}: {detail}", hint) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if gone_ok and isinstance(reason, OSError) and reason.errno in _GONE:
            return  # the process that held the fault is gone, and the fault with it
        raise CaptureError(f"POST {url} {json.dumps(body)} failed: {reason}", hint) from exc


# -- packet drops at the receiver -----------------------------------------------------


class PacketDrops(Fault):
    """`drop` of every `every` TCP segments to `port` dropped as they arrive in `ns`.

    `syn_only` drops only connection requests: each dropped SYN costs the client
    the initial retransmission timeout (1 s), and each dropped retransmit at least 1 s more.
    """

    def __init__(self, scenario: str, target: str, ns: str, port: int, every: int, syn_only: bool,
                 drop: int = 1) -> None:
        # every and drop are checked where the rule is made (replay/netns.py)
        super().__init__(scenario, "network_egress", target, resource=f"nft {ns}")
        self.ns, self.port, self.every, self.drop, self.syn_only = ns, port, every, drop, syn_only

    def inject(self) -> None:
        drop_ingress_every(self.ns, self.every, tcp_dport=self.port, syn_only=self.syn_only, drop=self.drop)

    def clear(self) -> None:
        if Path("/run/netns", self.ns).exists():
            clear_drops(self.ns)


# -- cgroup faults --------------------------------------------------------------------


class _HelperFault(Fault):
    """A fault made of helper processes in the target's cgroups plus cgroup-v1 settings
    that clear() puts back as they were."""

    def __init__(self, scenario: str, domain: str, topology: Topology, service: str, resource: str) -> None:
        super().__init__(scenario, domain, service, resource)
        self.topology, self.service = topology, service
        self._procs: list[subprocess.Popen[bytes]] = []
        self._saved: list[tuple[Path, str]] = []  # (file, old value), restored in reverse

    def _set(self, path: Path, value: str) -> None:
        self._saved.append((path, path.read_text().strip()))
        _write(path, value)

    def _spawn(self, argv: list[str]) -> None:
        self._procs.append(self.topology.spawn(self.service, argv, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))

    def clear(self) -> None:
        for proc in self._procs:
            _kill_group(proc)
        self._procs.clear()
        while self._saved:
            path, value = self._saved.pop()
            if path.parent.exists():  # gone with the lab: nothing to restore
                _write(path, value)


def _kill_group(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Kill a helper and what it started (its own session); return once all are gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        proc.poll()  # reaps the leader; its children go to init, which reaps them
        if time.monotonic() > deadline:
            raise CaptureError(f"helper process group {proc.pid} survives SIGKILL",
                               f"ps -o pid,stat,cmd -g {proc.pid} shows it")
        time.sleep(0.005)
    proc.wait(timeout=timeout_s)


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CaptureError(f"cannot write {value!r} to {path}: {exc.strerror}",
                           "the lab's cgroups exist only while its Topology is open") from exc


class CpuContention(_HelperFault):
    """`hogs` busy loops in the service's cgroups and, with `cpus`, a CFS quota of that
    many CPUs on its v1 cpu cgroup: its threads wait in the run queue and get throttled."""

    def __init__(self, topology: Topology, service: str, hogs: int, cpus: float | None,
                 period_us: int) -> None:
        if hogs < 0 or (cpus is not None and cpus <= 0):
            raise ValueError(f"need hogs >= 0 and cpus > 0, got hogs={hogs} cpus={cpus}")
        cpu_dir = topology.cgroup_v1("cpu", service)
        super().__init__("cpu_contention", "cpu_throttle", topology, service, resource=f"cgroup {cpu_dir}")
        self.hogs, self.cpus, self.period_us, self.cpu_dir = hogs, cpus, period_us, cpu_dir

    def inject(self) -> None:
        if self._procs or self._saved:
            return
        try:
            if self.cpus is not None:
                # period first: the kernel checks the quota against the current period
                self._set(self.cpu_dir / "cpu.cfs_period_us", str(self.period_us))
                self._set(self.cpu_dir / "cpu.cfs_quota_us", str(int(self.cpus * self.period_us)))
            for _ in range(self.hogs):
                self._spawn(["sh", "-c", "while :; do :; done"])
        except BaseException:
            self.clear()
            raise


class MemoryPressure(_HelperFault):
    """The service's v1 memory limit set `squeeze_mb` below what its cgroup uses now:
    its working set no longer fits, so its file pages (the backend's mapped weights,
    its code) are evicted and faulted back from disk, and its allocations wait in
    direct reclaim, as in a pod whose limit is under its working set.

    There is no swap here: anonymous memory cannot be reclaimed. The kernel refuses a
    limit it cannot reclaim down to (EBUSY: the fault fails and says so), and a
    service whose anonymous memory grows past the limit is OOM-killed. Keep
    squeeze_mb under the service's file pages (the backend's weights: 64 MiB).
    """

    def __init__(self, topology: Topology, service: str, squeeze_mb: int) -> None:
        mem_dir = topology.cgroup_v1("memory", service)
        super().__init__("memory_pressure", "memory_pressure", topology, service, resource=f"cgroup {mem_dir}")
        self.mem_dir, self.squeeze_mb = mem_dir, squeeze_mb
        self.limit_bytes: int | None = None

    def inject(self) -> None:
        if self._saved:
            return
        usage = int((self.mem_dir / "memory.usage_in_bytes").read_text())
        if usage <= (self.squeeze_mb + 1) * _MIB:
            raise CaptureError(f"memory_pressure: {self.service} uses {usage >> 20} MiB, not more than "
                               f"squeeze_mb={self.squeeze_mb}", "give a smaller lab.faults.memory_pressure.squeeze_mb")
        self.limit_bytes = usage - self.squeeze_mb * _MIB
        try:
            self._set(self.mem_dir / "memory.limit_in_bytes", str(self.limit_bytes))
        except BaseException:
            self.clear()
            raise

    def clear(self) -> None:
        super().clear()
        self.limit_bytes = None


# -- the registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A fault parameter a user may set: its default and what it may be (a number from
    `low` to `high`, of the default's type, or one of `choices`)."""

    default: int | float | str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, scenario: str, name: str, value: Any) -> int | float | str:
        where = f"{scenario}.{name}={value!r}"
        if self.choices:
            if value not in self.choices:
                raise ConfigError(f"fault parameter {where} is not one of {', '.join(self.choices)}",
                                  f"pass e.g. --fault {scenario}.{name}={self.default}")
            return value
        kind = type(self.default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ConfigError(f"fault parameter {where} is not {'an integer' if kind is int else 'a number'}",
                              f"pass e.g. --fault {scenario}.{name}={self.default}")
        if not self.low <= value <= self.high:
            raise ConfigError(f"fault parameter {where} is out of range: {self.low:g} to {self.high:g}",
                              f"pass e.g. --fault {scenario}.{name}={self.default}")
        return kind(value)


def _params(scenario: str, given: Mapping[str, Any] | None, allowed: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given or {}) - set(allowed))
    if unknown:
        raise ConfigError(f"scenario '{scenario}' has no parameter {unknown[0]!r}",
                          f"its parameters: {', '.join(sorted(allowed))}")
    return {**allowed, **(given or {})}


@dataclass(frozen=True)
class Scenario:
    """One fault scenario: the v1 domain it labels, the lab service it targets, the
    parameters a user may set (with their defaults) and how it is injected.

    `wiring` names where the fault goes (an admin URL, a port); the lab finds it
    from the topology when it is None, and a test may pass it like a parameter."""

    name: str
    domain: str
    target: str
    params: Mapping[str, Param]
    make: Callable[[Topology, dict[str, Any]], Fault]
    wiring: Mapping[str, Any] = field(default_factory=dict)
    # a check between parameters: an error message, or None when they agree
    relation: Callable[[Mapping[str, Any]], str | None] | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    def check(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every parameter, the given ones checked against their ranges; ConfigError names
        an unknown one or a bad value."""
        chosen = _params(self.name, given, self.defaults)
        checked = {k: self.params[k].check(self.name, k, v) for k, v in chosen.items()}
        problem = self.relation(checked) if self.relation else None
        if problem:
            raise ConfigError(f"fault parameters of {self.name}: {problem}",
                              f"see `slocap lab list` for {self.name}'s parameters and defaults")
        return checked

    def __call__(self, topology: Topology, params: Mapping[str, Any] | None = None) -> Fault:
        given = dict(params or {})
        wiring = {k: given.pop(k) for k in list(given) if k in self.wiring}
        chosen = self.check(given)
        fault = self.make(topology, {**chosen, **self.wiring, **wiring})
        fault.params = chosen  # what the label records as the fault's intensity
        return fault


def _admin_url(topology: Topology, service: str, line: str = "ready", scheme: str = "http") -> str:
    host, port = topology.endpoint(service, line)
    return f"{scheme}://{host}:{port}/admin/fault"


def _admin(scenario: str, domain: str, service: str, body: Callable[[dict[str, Any]], dict[str, Any]],
           params: dict[str, Param], line: str = "ready", scheme: str = "http") -> Scenario:
    """A scenario held by `service`'s admin endpoint; `admin_url` overrides where that is."""

    def make(topology: Topology, p: dict[str, Any]) -> Fault:
        url = p.pop("admin_url") or _admin_url(topology, service, line, scheme)
        return AdminFault(scenario, domain, service, url, body(p))

    return Scenario(scenario, domain, service, params, make, {"admin_url": None})


def _drops(scenario: str, syn_only: bool, every: int, drop: int) -> Scenario:
    """Drops at the backend's namespace, the receiver of gateway → backend traffic."""

    def make(topology: Topology, p: dict[str, Any]) -> Fault:
        port = p["port"] or topology.endpoint("backend")[1]
        return PacketDrops(scenario, "backend", topology.ns("backend"), port, p["every"], syn_only, p["drop"])

    # `drop` of every `every` segments (connect_stall: SYNs) to the backend are dropped
    def relation(p: Mapping[str, Any]) -> str | None:
        if p["drop"] > p["every"]:
            return f"drop={p['drop']} is more than every={p['every']}: at most all of them can be dropped"
        return None

    return Scenario(scenario, "network_egress", "backend",
                    {"every": Param(every, 1, 1000), "drop": Param(drop, 1, 1000)}, make, {"port": None},
                    relation)


def _cpu_contention(topology: Topology, p: dict[str, Any]) -> Fault:
    return CpuContention(topology, p["service"], p["hogs"], p["cpus"], p["period_us"])


def _memory_pressure(topology: Topology, p: dict[str, Any]) -> Fault:
    return MemoryPressure(topology, p["service"], p["squeeze_mb"])


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    # the dns server prints `admin HOST:PORT` after `ready` (its DNS port)
    _admin("dns_latency", "network_dns", "dns", lambda p: {"kind": "delay", "ms": p["ms"]},
           {"ms": Param(900, 0, 60_000)}, line="admin"),
    _drops("tcp_loss", syn_only=False, every=2, drop=1),
    _drops("connect_stall", syn_only=True, every=4, drop=3),
    # the backend serves HTTPS only, /admin/fault included
    # every default pages within a window of injection in a smoke run (docs/slo.md)
    _admin("tls_slowdown", "network_egress", "backend",
           lambda p: {"kind": "tls_delay", "ms": p["ms"]}, {"ms": Param(1500, 0, 60_000)}, scheme="https"),
    Scenario("cpu_contention", "cpu_throttle", "gateway",
             {"service": Param("gateway", choices=SERVICES), "hogs": Param(3, 1, 64), "cpus": Param(0.3, 0.01, 64.0),
              "period_us": Param(100_000, 1_000, 1_000_000)}, _cpu_contention),
    _admin("provider_throttle", "provider_throttle", "backend",
           lambda p: {"kind": "throttle", **p},
           {"retry_after_s": Param(1, 0, 60), "fraction": Param(0.8, 0.0, 1.0)}, scheme="https"),
    # the provider answers 500 to a fraction of calls; the gateway retries them (up to 4
    # attempts), so users see slower answers and, when every attempt fails, errors
    _admin("provider_error", "provider_error", "backend",
           lambda p: {"kind": "error", "fraction": p["fraction"]}, {"fraction": Param(0.9, 0.0, 1.0)},
           scheme="https"),
    _admin("retrieval_slowdown", "retrieval_backend", "retrieval",
           lambda p: {"kind": "slowdown", "extra_ms": p["extra_ms"]}, {"extra_ms": Param(1000, 0, 600_000)}),
    Scenario("memory_pressure", "memory_pressure", "backend",
             {"service": Param("backend", choices=SERVICES), "squeeze_mb": Param(32, 1, 4096)}, _memory_pressure),
)}

# two faults at once, in different domains and on different resources
MIXED: dict[str, tuple[str, str]] = {
    "dns_latency+cpu_contention": ("dns_latency", "cpu_contention"),
    "tcp_loss+retrieval_slowdown": ("tcp_loss", "retrieval_slowdown"),
    "provider_throttle+memory_pressure": ("provider_throttle", "memory_pressure"),
    "provider_error+retrieval_slowdown": ("provider_error", "retrieval_slowdown"),
}


def build(scenario: str, topology: Topology, params: Mapping[str, Any] | None = None) -> Injector:
    """The injector of a scenario in SCENARIOS or MIXED; for a mixed one, `params`
    maps each part's name to its parameters."""
    if scenario in SCENARIOS:
        return SCENARIOS[scenario](topology, params)
    if scenario in MIXED:
        given = dict(params or {})
        unknown = sorted(set(given) - set(MIXED[scenario]))
        if unknown:
            raise ConfigError(f"scenario '{scenario}' has no part {unknown[0]!r}",
                              f"its parts: {', '.join(MIXED[scenario])}")
        return Combined([SCENARIOS[part](topology, given.get(part)) for part in MIXED[scenario]])
    raise ConfigError(f"unknown scenario {scenario!r}",
                      f"known scenarios: {', '.join(sorted([*SCENARIOS, *MIXED]))}")


def check_fault_params(params: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{scenario: {parameter: value}} as a user sets them (--fault, config lab.faults),
    each checked against its scenario's parameters; only what was given is kept."""
    out = {}
    for scenario, given in params.items():
        if scenario not in SCENARIOS:
            raise ConfigError(f"fault parameters for {scenario!r}, which is not a fault scenario",
                              f"fault scenarios: {', '.join(SCENARIOS)} (slocap lab list shows their parameters)")
        checked = SCENARIOS[scenario].check(given)
        out[scenario] = {k: checked[k] for k in given}
    return out


def params_for(scenario: str, params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """What build() takes for `scenario` from checked fault parameters: its own, or for a
    mixed scenario each part's."""
    if scenario in MIXED:
        return {part: dict(params[part]) for part in MIXED[scenario] if part in params}
    return dict(params.get(scenario) or {})
