"""slocap doctor: what this host supports, each hook really loaded and attached."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from capture import _libbpf, libraries
from capture import preflight as P
from capture.bcc import BCC_SIGNALS, bcc_available
from capture.probe import LoadedSignal
from capture.signals import LIBC, SIGNALS
from runfmt.errors import CaptureError


@dataclass
class SignalStatus:
    available: bool
    hooks: list[str]
    error: str | None = None


@dataclass
class Diagnosis:
    root: bool
    capabilities: dict[str, bool]
    btf: bool
    btf_path: str
    tracefs: str  # "mounted" | "mountable" | "unavailable"
    libbpf: str | None
    bcc: bool
    bcc_reason: str | None  # why BCC cannot stand in, when it cannot
    libraries: dict[str, list[str]] = field(default_factory=dict)  # what the uprobes cover
    signals: dict[str, SignalStatus] = field(default_factory=dict)
    mode: str = "unavailable"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _libbpf_version() -> str | None:
    try:
        return _libbpf.version()
    except OSError:
        return None


def _try_signal(name: str, libc: str) -> SignalStatus:
    sig = SIGNALS[name]
    hooks = sig.hook_names()
    try:
        probe = LoadedSignal(sig, ring_bytes=1 << 16, wakeup_bytes=1 << 15, libc=libc)
    except CaptureError as exc:
        return SignalStatus(False, hooks, exc.message)
    probe.close()
    return SignalStatus(True, probe.hooks)


def diagnose(libc: str = LIBC) -> Diagnosis:
    caps = P.effective_caps()
    privileged = all(caps.values())
    tracefs = "mounted" if P.tracefs_mounted() else "mountable" if P.tracefs_mountable() else "unavailable"
    d = Diagnosis(
        root=os.geteuid() == 0, capabilities=caps, btf=P.BTF_PATH.exists(), btf_path=str(P.BTF_PATH),
        tracefs=tracefs, libbpf=_libbpf_version(), bcc=False, bcc_reason=bcc_available())
    d.bcc = d.bcc_reason is None
    if privileged and d.btf and tracefs == "mountable":
        try:
            P.ensure_tracefs()
            d.tracefs = "mounted"
            d.notes.append(f"mounted tracefs at {P.TRACEFS}")
        except CaptureError as exc:
            d.notes.append(exc.message)
    d.libraries = {lib: libraries.resolve(lib, libc) for lib in ("libc", "libssl", "slotrace")}
    d.notes.append("tls covers the libssl files listed; statically linked TLS and Go's crypto/tls are not seen")
    if not d.libraries["slotrace"]:
        d.notes.append("trace stamping needs capture/_trace/libslotrace.so: run 'make bpf'")
    for name in SIGNALS:
        if not privileged:
            d.signals[name] = SignalStatus(False, SIGNALS[name].hook_names(), "not tried: needs root")
        elif not d.btf:
            d.signals[name] = SignalStatus(False, SIGNALS[name].hook_names(), "not tried: no kernel BTF")
        elif d.libbpf is None:
            d.signals[name] = SignalStatus(False, SIGNALS[name].hook_names(), "not tried: libbpf.so.1 missing")
        else:
            d.signals[name] = _try_signal(name, libc)
    if d.signals and all(s.available for s in d.signals.values()):
        d.mode = "core_full"
    elif not d.btf and d.bcc and privileged:
        d.mode = "bcc_degraded"
        d.notes.append(f"without BTF only {', '.join(BCC_SIGNALS)} can be recorded, through BCC (--mode bcc)")
    elif any(s.available for s in d.signals.values()):
        d.mode = "core_partial"
    return d
