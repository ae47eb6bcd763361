"""Degraded mode: DNS and retransmits through BCC, for kernels without BTF.

BCC compiles `bpf/bcc/<signal>.c` at load time against kernel headers
(`capture/bcc_setup.sh` prepares them). The C includes the same `bpf/<signal>.h`
as the CO-RE probe and writes the same struct into a ring buffer, read by the
same `RingReader` with the dtype taken from the CO-RE object's BTF, so
`Signal.to_columns` and the Parquet schema are unchanged. `BccSignal` has the
interface of `probe.LoadedSignal`.

Debian's BCC lives in the system Python's dist-packages; it is imported from
there alone, without putting the rest of that directory on `sys.path`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import mmap
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from capture import libraries
from capture.bpfobj import BpfObject
from capture.probe import LoadedSignal, ProgramStats
from capture.ringbuf import RingReader
from capture.signals import LIBC, Signal
from runfmt.errors import CaptureError

__all__ = ["BCC_SIGNALS", "BccSignal", "bcc_available", "kernel_source"]

log = logging.getLogger("capture.bcc")

BCC_PACKAGE = Path("/usr/lib/python3/dist-packages/bcc")
HEADERS_CACHE = Path("/var/cache/slocap/bcc-headers/current")  # made by capture/bcc_setup.sh
# bpf/ of the repository, linked into the package as _bpf_src (its headers and bcc/)
BPF_DIR = Path(__file__).resolve().parent / "_bpf_src"
SOURCE_DIR = BPF_DIR / "bcc"
PRELUDE = "ring.c"
# the kernel's own headers, where BCC looks when BCC_KERNEL_SOURCE is unset
MODULES = Path("/lib/modules")
# Debian's 6.12 headers mark functions nocf_check, which clang ignores for BPF
CFLAGS = ("-Wno-ignored-attributes",)

# index in bpf/bcc/ring.c's `tune` array of each tunable LoadedSignal.tune knows
TUNABLES = {"sample_shift": 0, "threshold_shift": 1}

_SETUP_HINT = "run 'make setup' (it calls capture/bcc_setup.sh), or record on a kernel with BTF"


@dataclass(frozen=True)
class _BccProbe:
    source: str  # in bpf/bcc/
    uprobes: tuple[tuple[str, str, bool], ...] = ()  # (program, libc symbol, is a uretprobe)
    tracepoints: tuple[str, ...] = ()  # "category:event", attached by BCC from TRACEPOINT_PROBE

    def hook_names(self, libc: str) -> list[str]:
        names = [f"bcc:{'uretprobe' if ret else 'uprobe'}:{libc}:{symbol}"
                 for _, symbol, ret in self.uprobes]
        return names + [f"bcc:tracepoint/{tp.replace(':', '/')}" for tp in self.tracepoints]


BCC_SIGNALS: dict[str, _BccProbe] = {
    "dns": _BccProbe("dns.c", uprobes=(("getaddrinfo_enter", "getaddrinfo", False),
                                       ("getaddrinfo_exit", "getaddrinfo", True))),
    "retransmit": _BccProbe("retransmit.c", tracepoints=("tcp:tcp_retransmit_skb",)),
}

_bcc: ModuleType | None = None


def _import_bcc() -> ModuleType:
    """Imports Debian's bcc package by its path: only `bcc` becomes importable."""
    global _bcc
    if _bcc is None:
        if "bcc" in sys.modules:
            _bcc = sys.modules["bcc"]
            return _bcc
        init = BCC_PACKAGE / "__init__.py"
        if not init.is_file():
            raise ImportError(f"python3-bpfcc is not installed ({init} is missing)")
        spec = importlib.util.spec_from_file_location(
            "bcc", init, submodule_search_locations=[str(BCC_PACKAGE)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bcc"] = module  # its submodules import "bcc.libbcc" etc.
        try:
            spec.loader.exec_module(module)
        except BaseException:
            for name in [n for n in sys.modules if n == "bcc" or n.startswith("bcc.")]:
                del sys.modules[name]
            raise
        _bcc = module
    return _bcc


@functools.cache
def _attach_uprobe_c():
    """libbcc's bpf_attach_uprobe with all 7 parameters.

    Debian's bcc 0.26 declares 6 in Python (iovisor/bcc#5236), so the 7th,
    ref_ctr_offset, is whatever lies on the stack. The kernel refuses a uprobe
    whose ref_ctr_offset differs from another probe's on the same function
    ("ref_ctr_offset mismatch" in dmesg): BCC then falls back to a tracefs event
    whose name collides with any other BCC probe of the same function, and a
    libbpf probe (slocap's CO-RE mode) attached after it fails. A separate CDLL
    gives a function pointer of our own, leaving bcc's untouched.
    """
    fn = ctypes.CDLL("libbcc.so.0", use_errno=True).bpf_attach_uprobe
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                   ctypes.c_ulonglong, ctypes.c_int, ctypes.c_uint32]
    return fn


def kernel_source() -> Path | None:
    """The kernel header tree BCC will compile against, or None when there is none.

    In order: BCC_KERNEL_SOURCE, the kernel's own /lib/modules/<release>/build,
    the tree capture/bcc_setup.sh built.
    """
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        return Path(env) if (Path(env) / "include" / "linux" / "kconfig.h").is_file() else None
    own = MODULES / os.uname().release
    for tree in (own / "build", own / "source"):
        if (tree / "include" / "linux" / "kconfig.h").is_file():
            return own / "build"
    if (HEADERS_CACHE / ".complete").is_file():
        return HEADERS_CACHE.resolve()
    return None


def bcc_available() -> str | None:
    """None when BCC can compile and load probes here, else why not."""
    try:
        _import_bcc()
    except Exception as exc:  # ImportError, or OSError when libbcc.so is missing
        return f"cannot import bcc: {exc}"
    if kernel_source() is None:
        env = os.environ.get("BCC_KERNEL_SOURCE")
        if env:
            return f"BCC_KERNEL_SOURCE={env} is not a kernel header tree (no include/linux/kconfig.h)"
        return (f"no kernel headers for {os.uname().release}: neither "
                f"{MODULES / os.uname().release / 'build'} nor {HEADERS_CACHE}")
    return None


@contextlib.contextmanager
def _stderr_captured(lines: list[str]):
    """Collects what libbcc writes to fd 2 (clang diagnostics, verifier log)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())
            for line in lines:
                log.debug("%s", line)


def _first_error(lines: list[str]) -> str:
    for line in lines:
        if "error:" in line:
            return line.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


class _BccObject:
    """The compiled BCC module and its hooks; `detach` stops new events."""

    def __init__(self, bpf) -> None:
        self.bpf = bpf

    def detach(self) -> None:
        if self.bpf is None:
            return
        for event in list(self.bpf.uprobe_fds):
            self.bpf.detach_uprobe_event(event)
        for tp in list(self.bpf.tracepoint_fds):
            self.bpf.detach_tracepoint(tp)

    def program_fds(self) -> dict[str, int]:
        """fd of every loaded program, by name (as BpfObject.program_fds)."""
        return {name.decode(): fn.fd for name, fn in self.bpf.funcs.items()} if self.bpf else {}

    def close(self) -> None:
        if self.bpf is not None:
            self.detach()
            self.bpf.cleanup()
            self.bpf = None


class BccSignal:
    """One signal compiled by BCC, attached and readable: same interface as LoadedSignal.

    `settings` (min_latency_ns, rate_limit, rate_burst) and the wakeup threshold
    become -D constants, BCC's equivalent of .rodata: fixed when the program is
    compiled. The tunables are an array map, BCC having no global data.
    """

    def __init__(self, signal: Signal, *, ring_bytes: int, wakeup_bytes: int,
                 settings: dict[str, int] | None = None, libc: str = LIBC) -> None:
        self.signal = signal
        self.hist = None  # neither signal keeps histograms
        self._stats = ProgramStats()  # run_stats
        probe = BCC_SIGNALS.get(signal.name)
        if probe is None:
            raise CaptureError(f"signal {signal.name!r} has no BCC variant",
                               f"BCC records {', '.join(BCC_SIGNALS)}; record the others on a kernel with BTF")
        reason = bcc_available()
        if reason:
            raise CaptureError(f"cannot load {signal.name!r} through BCC: {reason}", _SETUP_HINT)
        if ring_bytes % mmap.PAGESIZE or (ring_bytes & (ring_bytes - 1)):
            raise CaptureError(f"ring buffer size {ring_bytes} is not a power-of-two number of pages",
                               "set capture.ring_buffer_bytes to a power of two, at least 4096")
        paths = libraries.resolve("libc", libc) if probe.uprobes else []
        if probe.uprobes and not paths:
            raise CaptureError(f"cannot attach {signal.name!r}: libc not found at {libc}",
                               "pass --libc PATH, or run 'slocap doctor' to see what this host supports.")
        # the event layout, as the compiler laid it out for the CO-RE object
        with BpfObject(signal.object_path) as core:
            self.dtype = core.struct_dtype(signal.struct)
        self.hooks = probe.hook_names(paths[0] if paths else libc)
        self.obj = _BccObject(self._compile(probe, ring_bytes, wakeup_bytes, settings or {}))
        try:
            for program, symbol, retprobe in probe.uprobes:
                self._attach_uprobe(program, paths[0], symbol, retprobe)
            self.reader = RingReader(self.obj.bpf[b"events"].map_fd, ring_bytes, self.dtype)
        except BaseException:
            self.obj.close()
            raise

    def _compile(self, probe: _BccProbe, ring_bytes: int, wakeup_bytes: int,
                 settings: dict[str, int]):
        bcc = _import_bcc()
        source = SOURCE_DIR / probe.source
        # one main file: BCC rewrites map calls only there, not in included files
        text = (f'#line 1 "{SOURCE_DIR / PRELUDE}"\n' + (SOURCE_DIR / PRELUDE).read_text()
                + f'#line 1 "{source}"\n' + source.read_text()
                + f"\n_Static_assert(sizeof(struct {self.signal.struct}) == {self.dtype.itemsize},"
                  f' "struct {self.signal.struct} differs from {self.signal.object_path.name}");\n')
        defines = {"RING_PAGES": ring_bytes // mmap.PAGESIZE, "WAKEUP_BYTES": wakeup_bytes,
                   **{name.upper(): value for name, value in settings.items()}}
        cflags = [f"-I{BPF_DIR}", f"-I{SOURCE_DIR}", *CFLAGS,
                  *(f"-D{name}={int(value)}ULL" for name, value in defines.items())]
        tree = kernel_source()
        if tree is not None and "BCC_KERNEL_SOURCE" not in os.environ \
                and tree == HEADERS_CACHE.resolve():
            os.environ["BCC_KERNEL_SOURCE"] = str(tree)  # read by libbcc at compile time
        lines: list[str] = []
        try:
            with _stderr_captured(lines):
                # compiles, loads, and attaches the TRACEPOINT_PROBEs
                # bcc takes bytes (a str costs a DeprecationWarning), but cflags as str
                return bcc.BPF(text=text.encode(), cflags=cflags)
        except Exception as exc:
            detail = _first_error(lines)
            raise CaptureError(
                f"cannot load {source.name} through BCC: {exc}" + (f": {detail}" if detail else ""),
                f"kernel headers: {tree}; '-v' shows BCC's log; {_SETUP_HINT}",
            ) from None

    def _attach_uprobe(self, program: str, path: str, symbol: str, retprobe: bool) -> None:
        """BPF.attach_uprobe's steps, with the right ref_ctr_offset (see _attach_uprobe_c)."""
        bcc, bpf = _import_bcc(), self.obj.bpf
        kind = "uretprobe" if retprobe else "uprobe"
        lines: list[str] = []
        try:
            with _stderr_captured(lines):
                binary, offset = bcc.BPF._check_path_symbol(path.encode(), symbol.encode(), None, -1)
                fn = bpf.load_func(program.encode(), bcc.BPF.KPROBE)
                event = bpf._get_uprobe_evname(kind[0].encode(), binary, offset, -1)
                ctypes.set_errno(0)
                fd = _attach_uprobe_c()(fn.fd, int(retprobe), event, binary, offset, -1, 0)
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err) if err else "failed")
        except Exception as exc:
            detail = _first_error(lines)
            raise CaptureError(f"cannot attach {kind} {path}:{symbol} through BCC: {exc}"
                               + (f": {detail}" if detail else ""),
                               "check the library path: 'slocap doctor' lists the libraries it found") from None
        bpf._add_uprobe_fd(event, fd)  # so detach and cleanup find it

    # the same drain interface as capture/probe.py's LoadedSignal: the recorder reads either
    @property
    def ring_fd(self) -> int:
        return self.reader.fd

    def read(self) -> np.ndarray:
        return self.reader.read()

    def dropped(self) -> int:
        """Events the kernel could not put in the full ring, since load."""
        return int(self.obj.bpf[b"dropped"][0].value)

    def sampled_out(self) -> int:
        """Events the rate limit or load-shedding sampling left out, since load."""
        return int(self.obj.bpf[b"sampled_out"][0].value)

    def tune(self, **values: int) -> None:
        """Changes sample_shift / threshold_shift while recording."""
        table = self.obj.bpf[b"tune"]
        for name, value in values.items():
            if name in TUNABLES:
                table[TUNABLES[name]] = table.Leaf(value)

    run_stats = LoadedSignal.run_stats  # reads the fdinfo of obj.program_fds()

    def close(self) -> None:
        if self.obj.bpf is None:
            return
        self._stats.close()
        self.obj.detach()  # stop new events before the ring goes away
        self.reader.close()
        self.obj.close()
