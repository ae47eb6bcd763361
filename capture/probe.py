"""A signal's probe loaded, attached and readable: BpfObject + RingReader."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from capture import libraries
from capture.bpfobj import BpfObject
from capture.hist import HistReader
from capture.pods import cgroup2_mount
from capture.ringbuf import RingReader
from capture.signals import LIBC, Signal
from runfmt.errors import CaptureError

log = logging.getLogger(__name__)

VARIANTS = ("auto", "tp_btf", "raw_tp")


def cgroup_identity(fd: int) -> tuple[int, int]:
    """(id, depth below the cgroup-v2 root) of the cgroup-v2 directory open as `fd`:
    the id is the directory's inode number, the depth its number of path parts."""
    path = Path(os.readlink(f"/proc/self/fd/{fd}"))
    root = cgroup2_mount()
    if root is None or not path.is_relative_to(root):
        raise CaptureError(f"{path} is not in the cgroup-v2 hierarchy ({root or 'not mounted'})",
                           "pass a cgroup-v2 directory, e.g. /sys/fs/cgroup/unified/<name>")
    return os.fstat(fd).st_ino, len(path.relative_to(root).parts)


class ProgramStats:
    """(run time ns, runs) of a set of BPF programs from their fdinfo; zero unless BPF
    stats are on. Read every second: each fdinfo stays open and is read again from 0."""

    def __init__(self) -> None:
        self._fdinfo: dict[int, int] = {}  # program fd -> its open /proc/self/fdinfo

    def read(self, program_fds) -> tuple[int, int]:
        total_ns = total_cnt = 0
        for fd in program_fds:
            try:
                if fd not in self._fdinfo:
                    self._fdinfo[fd] = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                info = os.pread(self._fdinfo[fd], 4096, 0)
            except OSError:
                continue
            for line in info.splitlines():
                key, _, value = line.partition(b":")
                if key == b"run_time_ns":
                    total_ns += int(value)
                elif key == b"run_cnt":
                    total_cnt += int(value)
        return total_ns, total_cnt

    def close(self) -> None:
        for fd in self._fdinfo.values():
            os.close(fd)
        self._fdinfo.clear()


class LoadedSignal:
    """Loads one signal's object with its settings and attaches every hook.

    Tracepoint hooks come in two variants (runqslower's pattern): tp_btf first,
    and when the kernel refuses it, the raw_tp program of the same object,
    switched on with autoload. `variant` forces one.

    `tune` sets .data.tune globals before load; with `attach` False the programs
    are loaded but not attached (attach_hooks() does it later).
    """

    def __init__(self, signal: Signal, *, ring_bytes: int, wakeup_bytes: int,
                 settings: dict[str, int] | None = None, libc: str = LIBC,
                 variant: str = "auto", shared_maps: dict[str, int] | None = None,
                 cgroup_fd: int | None = None, tune: dict[str, int] | None = None,
                 attach: bool = True) -> None:
        self.signal = signal
        self.cgroup_fd = cgroup_fd
        self.shared_maps = shared_maps or {}
        self.initial_tune = tune or {}
        self.attach = attach
        self.libc = libc
        if variant == "auto":
            attempts = [False, True] if signal.has_fallback else [False]
        else:
            attempts = [variant == "raw_tp"]
        for i, use_fallback in enumerate(attempts):
            try:
                self._load(ring_bytes, wakeup_bytes, settings or {}, use_fallback)
                break
            except CaptureError as exc:
                if i == len(attempts) - 1:
                    raise
                log.info("%s: %s; trying the raw_tp variant", signal.name, exc.message)

    def _load(self, ring_bytes: int, wakeup_bytes: int, settings: dict[str, int], use_fallback: bool) -> None:
        self.use_fallback = use_fallback
        self.hooks: list[str] = []
        self._stats = ProgramStats()
        self.obj = BpfObject(self.signal.object_path)
        try:
            for name, fd in self.shared_maps.items():
                self.obj.reuse_map(name, fd)
            for name in self.signal.rider_maps:
                if name not in self.shared_maps:
                    self.obj.resize_map(name, 1)
            for hook in self.signal.hooks:
                if hook.fallback:
                    self.obj.set_autoload(hook.program, not use_fallback)
                    self.obj.set_autoload(hook.fallback, use_fallback)
            self.obj.resize_map("events", ring_bytes)
            if self.cgroup_fd is not None:
                cg_id, cg_level = cgroup_identity(self.cgroup_fd)
                settings = {**settings, "filter_cgroup": 1, "target_cgroup_id": cg_id,
                            "target_cgroup_level": cg_level}
            self.obj.set_rodata(wakeup_bytes=wakeup_bytes, **settings)
            if self.initial_tune:
                self.obj.set_initial(".data.tune", **self.initial_tune)
            self.obj.load()
            if self.cgroup_fd is not None:
                self.obj.update_elem("target_cgroup", 0, self.cgroup_fd)
            if self.attach:
                self.attach_hooks()
            self.dtype = self.obj.struct_dtype(self.signal.struct)
            self.reader = RingReader(self.obj.map_fd("events"), ring_bytes, self.dtype)
            self.hist = HistReader(self.obj) if self.signal.hist else None
        except BaseException:
            self.obj.close()
            raise

    def attach_hooks(self) -> None:
        """Attaches every hook of the loaded object; `hooks` names them."""
        for hook in self.signal.hooks:
            if hook.kind == "tracepoint":
                self.obj.attach(hook.fallback if self.use_fallback and hook.fallback else hook.program)
                self.hooks.append(hook.name(use_fallback=self.use_fallback))
                continue
            paths = libraries.resolve(hook.library, self.libc)
            if not paths:
                raise CaptureError(f"no {hook.library} found on this host for {hook.target}",
                                   "'slocap doctor' lists the libraries it looked for")
            for path in paths:
                self.obj.attach_uprobe(hook.program, path, hook.function, cookie=hook.cookie,
                                       retprobe=hook.kind == "uretprobe")
                self.hooks.append(hook.name(path))

    @property
    def ring_fd(self) -> int:
        return self.reader.fd

    def read(self) -> np.ndarray:
        return self.reader.read()

    def sampled_out(self) -> int:
        """Events the rate limit or load-shedding sampling left out, since load."""
        return self.obj.read_global(".bss", "sampled_out")

    def tune(self, **values: int) -> None:
        """Changes sample_shift / threshold_shift while recording."""
        for name, value in values.items():
            if self.obj.has_global(".data.tune", name):
                self.obj.write_global(".data.tune", name, value)

    def run_stats(self) -> tuple[int, int]:
        """(run time ns, runs) of this signal's programs; zero unless BPF stats are on."""
        return self._stats.read(self.obj.program_fds().values())

    def counted_runs(self) -> int:
        """Runs of this signal's programs counted by the programs themselves (loaded with
        count_runs set, safety.bpf_run_time "calibrate"); 0 otherwise. Every object has the
        counter (bpf/common.bpf.h)."""
        return self.obj.percpu_sum("run_count")

    def dropped(self) -> int:
        """Events (and histogram updates) the kernel had no room for, since load."""
        lost = self.obj.read_global(".bss", "dropped")
        if self.hist is not None:
            lost += self.obj.read_global(".bss", "hist_dropped")
        for name in self.signal.drop_maps:
            lost += self.obj.percpu_sum(name)
        return lost

    def close(self) -> None:
        self._stats.close()
        self.obj.detach()  # stop new events before the ring goes away
        self.reader.close()
        self.obj.close()
