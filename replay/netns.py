"""The lab's test hosts: two network namespaces joined by a veth pair.

A `HostPair` is a client and a server host on one virtual wire. Faults are
injected at the receiver (`drop_ingress_every`), because only drops at the
receiver make TCP retransmit; drops at the sender's egress come back to TCP as
local errors. Everything here calls `ip`, `nft` and `ethtool` and needs root.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from runfmt.errors import CaptureError

__all__ = [
    "HostPair",
    "cleanup_leftovers",
    "clear_drops",
    "drop_ingress_every",
    "exec_argv",
]

PREFIX = "slo-"
NFT_TABLE = "slo_lab"
COMMAND_TIMEOUT_S = 15.0

_counter = itertools.count()

_ROOT_HINT = (
    "run as root (needs CAP_NET_ADMIN and CAP_SYS_ADMIN) with iproute2, nftables "
    "and ethtool installed; `ip netns list` shows leftovers, "
    "replay.netns.cleanup_leftovers() removes them."
)


def run(argv: Sequence[str], *, stdin: str | None = None, hint: str = _ROOT_HINT) -> str:
    """Run one command to completion; raise CaptureError quoting it on failure."""
    cmd = " ".join(argv)
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CaptureError(f"cannot run '{cmd}': {argv[0]} not found", hint) from exc
    except subprocess.TimeoutExpired as exc:
        raise CaptureError(f"'{cmd}' did not finish in {COMMAND_TIMEOUT_S:.0f} s", hint) from exc
    if done.returncode != 0:
        stderr = done.stderr.strip() or "(no stderr)"
        raise CaptureError(f"'{cmd}' failed with exit code {done.returncode}: {stderr}", hint)
    return done.stdout


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` inside namespace `ns`."""
    return ["ip", "netns", "exec", ns, *argv]


def _list_namespaces() -> list[str]:
    # lines look like "slo-1-0-s (id: 3)" or just "slo-1-0-s"
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _delete_namespace(ns: str) -> None:
    run(["ip", "netns", "delete", ns])


def wait_link_up(ns: str, dev: str, timeout_s: float = 5.0) -> None:
    """Wait until `dev` in `ns` reports operstate UP.

    The veth's carrier change is applied by the kernel's linkwatch up to ~1 s
    later, and IPv6 treats the link as not ready until then: measured here, an
    IPv6 connect in that window waits 1 s for a second neighbour solicitation
    (IPv4 is unaffected). `ip link show` (RTM_GETLINK) makes the kernel apply
    the pending change at once, so this takes a few ms.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        out = run(["ip", "-n", ns, "-o", "link", "show", "dev", dev])
        if "state UP" in out:
            return
        if time.monotonic() > deadline:
            raise CaptureError(
                f"link {dev} in namespace {ns} not up after {timeout_s:.0f} s: {out.strip()}",
                "check `ip -n " + ns + " link` and dmesg for veth errors.",
            )
        time.sleep(0.01)


class Scoped:
    """Created on entry, torn down on exit; a creation that fails halfway is torn down
    before its error propagates, and a cleanup failure never hides the body's exception."""

    def _create(self) -> None:
        raise NotImplementedError

    def _teardown(self, raise_errors: bool) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self._create()
        except BaseException:
            self._teardown(raise_errors=False)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._teardown(raise_errors=exc_type is None)


class HostPair(Scoped):
    """Client and server namespaces joined by one veth pair.

    Use as a context manager; leaving the block (also by an exception) kills the
    processes started with `popen` and deletes both namespaces, which takes the
    veth pair with them.
    """

    def __init__(self) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.tag = f"{pid}-{n}"
        # k only has to differ between pairs alive at the same time; the pairs
        # are isolated from each other anyway, distinct subnets keep logs readable
        k = (pid + n) % 256
        self.client_ns = f"{PREFIX}{self.tag}-c"
        self.server_ns = f"{PREFIX}{self.tag}-s"
        self.client_if = "veth-c"
        self.server_if = "veth-s"
        self.client_ip = f"198.18.{k}.1"
        self.server_ip = f"198.18.{k}.2"
        # in canonical form, as the recorder writes addresses ("fdff:5107::1" for pair 0)
        self.client_ip6 = str(ipaddress.IPv6Address(f"fdff:5107:{k:x}::1"))
        self.server_ip6 = str(ipaddress.IPv6Address(f"fdff:5107:{k:x}::2"))
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []


    def _create(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            run(["ip", "netns", "add", ns])
            self._made.append(ns)
        # create both ends directly inside their namespaces: nothing in the root ns
        run(["ip", "link", "add", self.client_if, "netns", self.client_ns, "type", "veth",
              "peer", "name", self.server_if, "netns", self.server_ns])
        for ns, dev, ip4, ip6 in (
            (self.client_ns, self.client_if, self.client_ip, self.client_ip6),
            (self.server_ns, self.server_if, self.server_ip, self.server_ip6),
        ):
            run(["ip", "-n", ns, "addr", "add", f"{ip4}/30", "dev", dev])
            # nodad: usable at once instead of "tentative" for ~1-2 s
            run(["ip", "-n", ns, "-6", "addr", "add", f"{ip6}/64", "dev", dev, "nodad"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            # MTU-sized segments, so one dropped packet is one retransmitted segment
            run(exec_argv(ns, ["ethtool", "-K", dev, "gso", "off", "tso", "off", "gro", "off"]))
        for ns, dev in ((self.client_ns, self.client_if), (self.server_ns, self.server_if)):
            wait_link_up(ns, dev)

    def _teardown(self, *, raise_errors: bool) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._procs.clear()
        first_error: CaptureError | None = None
        for ns in reversed(self._made):
            try:
                _delete_namespace(ns)
            except CaptureError as exc:
                first_error = first_error or exc
        self._made.clear()
        if first_error is not None and raise_errors:
            raise first_error

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs `argv` inside namespace `ns`."""
        return exec_argv(ns, argv)

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` in `ns`; it is killed when the pair is torn down."""
        proc: subprocess.Popen[Any] = subprocess.Popen(exec_argv(ns, argv), **kw)
        self._procs.append(proc)
        return proc

    def run(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run `argv` in `ns` to completion (pass `timeout=` to bound it)."""
        return subprocess.run(exec_argv(ns, argv), **kw)


def _nft(ns: str, script: str) -> None:
    run(
        exec_argv(ns, ["nft", "-f", "-"]),
        stdin=script,
        hint="check that nftables is installed and namespace '" + ns + "' exists "
        "(`ip netns list`); run as root.",
    )


def drop_ingress_every(
    ns: str,
    n: int,
    *,
    tcp_dport: int | None = None,
    tcp_sport: int | None = None,
    syn_only: bool = False,
    drop: int = 1,
) -> None:
    """Drop `drop` of every `n` matching TCP segments arriving in namespace `ns`
    (by default one: every `n`th).

    `ns` must be the receiver's namespace. The count starts at the first match,
    which is dropped; calling again replaces the rule and restarts the count.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= drop <= n:
        raise ValueError(f"drop must be 1..{n} (of every {n}), got {drop}")
    match = ["meta l4proto tcp"]
    for name, port in (("dport", tcp_dport), ("sport", tcp_sport)):
        if port is not None:
            if not 0 < port < 65536:
                raise ValueError(f"tcp_{name} must be 1..65535, got {port}")
            match.append(f"tcp {name} {port}")
    if syn_only:
        match.append("tcp flags & (syn | ack) == syn")
    # numgen comes last so that only matching segments advance the counter
    # counts 0 .. drop-1 of each run of n are dropped: deterministic, unlike numgen random
    rule = " ".join(match) + f" numgen inc mod {n} < {drop} drop"
    # "add, delete, define" in one transaction: replaces any earlier table atomically
    _nft(
        ns,
        f"table inet {NFT_TABLE}\n"
        f"delete table inet {NFT_TABLE}\n"
        f"table inet {NFT_TABLE} {{\n"
        f"  chain input {{\n"
        f"    type filter hook input priority filter; policy accept;\n"
        f"    {rule}\n"
        f"  }}\n"
        f"}}\n",
    )


def clear_drops(ns: str) -> None:
    """Remove the drop rules of `drop_ingress_every` from `ns` (no-op if none)."""
    # nft 1.0.6 has no "destroy": add-then-delete never fails on a missing table
    _nft(ns, f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")


def cleanup_leftovers(prefix: str = PREFIX) -> list[str]:
    """Delete every namespace whose name starts with `prefix`; return their names."""
    if not prefix:
        raise ValueError("prefix must not be empty: it would delete every namespace")
    deleted = []
    for ns in _list_namespaces():
        if ns.startswith(prefix):
            _delete_namespace(ns)
            deleted.append(ns)
    return deleted
