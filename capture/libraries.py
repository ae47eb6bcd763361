"""Where the user-space functions the probes hook live: libc, libssl, and the
marker library for trace-context stamping."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
SLOTRACE = Path(__file__).resolve().parent / "_trace" / "libslotrace.so"
_LIBSSL = re.compile(r"/libssl\.so(\.\d+)*$")


@cache
def _ldconfig() -> dict[str, str]:
    done = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True)
    found: dict[str, str] = {}
    for line in done.stdout.splitlines()[1:]:
        name, _, path = line.strip().partition(" => ")
        if "x86-64" in name or "x86_64" in path:
            found.setdefault(name.split()[0], path)
    return found


def _unique_files(paths: list[str]) -> list[str]:
    """One path per file: uprobes are per inode, twice would count twice."""
    seen, out = set(), []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(os.path.realpath(p))
    return out


def libssl_paths() -> list[str]:
    """The system libssl plus every libssl mapped by a running process.

    Not covered: TLS linked statically into a binary, and Go's crypto/tls.
    """
    paths = [p for name, p in _ldconfig().items() if name.startswith("libssl.so")]
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process is gone or not ours to read
            continue
        for line in text.splitlines():
            path = line.rsplit(None, 1)[-1] if line.count(" ") >= 5 else ""
            if _LIBSSL.search(path) and not path.endswith("(deleted)"):
                paths.append(f"/proc/{maps.parent.name}/root{path}" if not os.path.exists(path) else path)
    return _unique_files(paths)


def resolve(library: str, libc: str = LIBC) -> list[str]:
    """Paths to attach a hook of `library` to; empty when none is on this host."""
    if library == "libc":
        return _unique_files([libc])
    if library == "libssl":
        return libssl_paths()
    if library == "slotrace":
        return _unique_files([str(SLOTRACE)])
    raise ValueError(f"unknown library {library!r}")
