"""What the host must offer before a probe loads: privilege, BTF, tracefs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runfmt.errors import CaptureError

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
TRACEFS = Path("/sys/kernel/tracing")
CAPS = {"CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def effective_caps() -> dict[str, bool]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            return {name: bool(mask >> bit & 1) for name, bit in CAPS.items()}
    return dict.fromkeys(CAPS, False)


def check_privilege() -> None:
    missing = [name for name, ok in effective_caps().items() if not ok]
    if missing:
        raise CaptureError(
            f"slocap needs root to load eBPF probes: uid {os.geteuid()} lacks {', '.join(missing)}",
            "run it as root (sudo slocap ...), or 'slocap doctor' to see what this host supports",
        )


def check_btf() -> None:
    if not BTF_PATH.exists():
        raise CaptureError(
            f"no kernel BTF at {BTF_PATH}: CO-RE probes cannot be relocated on this kernel",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y; 'slocap doctor' says whether BCC can stand in",
        )


def tracefs_mounted() -> bool:
    return (TRACEFS / "events").is_dir()


def tracefs_mountable() -> bool:
    return "tracefs" in Path("/proc/filesystems").read_text()


def ensure_tracefs() -> None:
    """Mounts tracefs when missing: without it tracepoints "do not exist"."""
    if tracefs_mounted():
        return
    if not tracefs_mountable():
        raise CaptureError(
            "tracefs is not mounted and this kernel does not offer it (not in /proc/filesystems)",
            "use a kernel with CONFIG_TRACING; 'slocap doctor' lists what still works",
        )
    done = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not tracefs_mounted():
        raise CaptureError(
            f"tracefs is not mounted at {TRACEFS} and mounting it failed: {done.stderr.strip() or 'no reason given'}",
            f"mount it as root: mount -t tracefs nodev {TRACEFS}",
        )


def check_bcc() -> None:
    from capture.bcc import bcc_available

    reason = bcc_available()
    if reason:
        raise CaptureError(f"BCC mode is not usable here: {reason}",
                           "run 'make setup' (it installs python3-bpfcc and a kernel header tree)")


def check_host(mode: str = "auto") -> None:
    """Everything `slocap record` needs before it loads a probe."""
    check_privilege()
    if mode == "bcc" or (mode == "auto" and not BTF_PATH.exists() and _bcc_usable()):
        check_bcc()
    else:
        check_btf()
    ensure_tracefs()


def _bcc_usable() -> bool:
    from capture.bcc import bcc_available

    return bcc_available() is None
