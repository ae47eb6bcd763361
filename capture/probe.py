"""A signal's probe loaded, attached and readable: BpfObject + RingReader."""

from __future__ import annotations

import numpy as np

from capture.bpfobj import BpfObject
from capture.ringbuf import RingReader
from capture.signals import LIBC, Signal


class LoadedSignal:
    """Loads one signal's object with its settings and attaches every hook."""

    def __init__(self, signal: Signal, *, ring_bytes: int, wakeup_bytes: int,
                 settings: dict[str, int] | None = None, libc: str = LIBC) -> None:
        self.signal = signal
        self.obj = BpfObject(signal.object_path)
        try:
            self.obj.resize_map("events", ring_bytes)
            self.obj.set_rodata(wakeup_bytes=wakeup_bytes, **(settings or {}))
            self.obj.load()
            for hook in signal.hooks:
                if hook.kind == "tracepoint":
                    self.obj.attach(hook.program)
                else:
                    self.obj.attach_uprobe(hook.program, libc, hook.function,
                                           retprobe=hook.kind == "uretprobe")
            self.dtype = self.obj.struct_dtype(signal.struct)
            self.reader = RingReader(self.obj.map_fd("events"), ring_bytes, self.dtype)
        except BaseException:
            self.obj.close()
            raise

    @property
    def ring_fd(self) -> int:
        return self.reader.fd

    def read(self) -> np.ndarray:
        return self.reader.read()

    def dropped(self) -> int:
        """Events the kernel could not put in the full ring, since load."""
        return self.obj.read_global(".bss", "dropped")

    def close(self) -> None:
        self.obj.detach()  # stop new events before the ring goes away
        self.reader.close()
        self.obj.close()
